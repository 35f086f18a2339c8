//! CORE. Client id, topic and filter patterns: `{run}` run id, `{i}` global index, `{k}`
//! index within the group, `{r}` region (`k % regions`), `{j}` filter number within a client.
//! Anything else is literal.

/// Values substituted into a pattern.
#[derive(Clone, Copy, Debug, Default)]
pub struct Vars<'a> {
    /// Run id.
    pub run: &'a str,
    /// Global index.
    pub i: u64,
    /// Group-relative index.
    pub k: u64,
    /// Region.
    pub r: u64,
    /// Filter number.
    pub j: u64,
}

/// Expands `pattern` with `vars`.
pub fn expand(pattern: &str, vars: &Vars<'_>) -> String {
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let tail = &rest[open..];
        let Some(close) = tail.find('}') else {
            out.push_str(tail);
            return out;
        };
        match &tail[1..close] {
            "run" => out.push_str(vars.run),
            "i" => push_num(&mut out, vars.i),
            "k" => push_num(&mut out, vars.k),
            "r" => push_num(&mut out, vars.r),
            "j" => push_num(&mut out, vars.j),
            _ => out.push_str(&tail[..=close]),
        }
        rest = &tail[close + 1..];
    }
    out.push_str(rest);
    out
}

fn push_num(out: &mut String, n: u64) {
    use std::fmt::Write;
    let _ = write!(out, "{n}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_every_variable_and_keeps_the_rest() {
        let v = Vars { run: "ab12", i: 67_108_869, k: 5, r: 1, j: 9 };
        assert_eq!(expand("{run}-v{k}", &v), "ab12-v5");
        assert_eq!(expand("fleet/{k}/cmd/{j}", &v), "fleet/5/cmd/9");
        assert_eq!(expand("region/{r}/x/{i}", &v), "region/1/x/67108869");
        assert_eq!(expand("$share/g/fleet/+/t{x}", &v), "$share/g/fleet/+/t{x}");
        assert_eq!(expand("open{brace", &v), "open{brace");
    }
}
