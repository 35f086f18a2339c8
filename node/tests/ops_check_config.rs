//! `flotilla check-config FILE`: a good file passes, a bad key or value fails with its name,
//! and nothing is started (no data directory appears). FLOTILLA_... environment variables
//! override the file, and flags override them.

mod common;

use std::process::Command;

fn check(text: &str) -> (bool, String) {
    check_with(text, &[], &[])
}

/// `check-config` with `env` set and `args` before the subcommand.
fn check_with(text: &str, env: &[(&str, &str)], args: &[&str]) -> (bool, String) {
    let dir = common::temp_data_dir();
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("flotilla.toml");
    std::fs::write(&file, text).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .current_dir(&dir)
        .envs(env.iter().copied())
        .args(args)
        .arg("check-config")
        .arg(&file)
        .output()
        .expect("run");
    assert!(!dir.join("data").exists(), "check-config started something");
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn check_config_accepts_good_files_and_names_what_is_wrong() {
    let example = include_str!("../flotilla.example.toml");
    let (ok, out) = check(example);
    assert!(ok && out.contains(": ok"), "{out}");
    let (ok, out) = check("log-format = \"json\"\n[admin]\nlisten = \"127.0.0.1:9946\"\n");
    assert!(ok, "{out}");
    let (ok, out) = check("no-such-key = 1\n");
    assert!(!ok && out.contains("no-such-key"), "{out}");
    let (ok, out) = check("[admin]\nlisten = \"0.0.0.0:9946\"\n");
    assert!(!ok && out.contains("loopback"), "{out}");
    let (ok, out) = check("log-format = \"xml\"\n");
    assert!(!ok && out.contains("xml"), "{out}");
}

#[test]
fn environment_variables_override_the_file_and_flags_override_them() {
    let file = "[admin]\nlisten = \"127.0.0.1:9946\"\n";
    let public = [("FLOTILLA_ADMIN_LISTEN", "0.0.0.0:9946")];
    let (ok, out) = check_with(file, &public, &[]);
    assert!(!ok && out.contains("0.0.0.0:9946") && out.contains("loopback"), "env not applied: {out}");
    let (ok, out) = check_with(file, &public, &["--admin-listen", "127.0.0.1:9947"]);
    assert!(ok, "the flag should win over the environment: {out}");
    let (ok, out) = check_with("", &[("FLOTILLA_LOG_FORMAT", "xml")], &[]);
    assert!(!ok && out.contains("xml"), "{out}");
}
