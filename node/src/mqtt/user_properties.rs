//! CORE. The user properties of a packet, shared: a message's list is one allocation
//! however many deliveries, queues and retransmissions carry it. Cloning bumps a count,
//! so a PUBLISH with 64 KiB of user properties fanned out to 10,000 subscribers holds its
//! properties once, not 10,000 times.
//!
//! Invariant: an empty list holds no allocation (`Default` is free, as every decoded
//! packet has one).

use std::sync::Arc;

use bytestring::ByteString;

/// One user property: name and value.
pub type UserProperty = (ByteString, ByteString);

/// User properties in order (the same name may repeat), shared by `Arc`.
#[derive(Clone, Default)]
pub struct UserProperties(Option<Arc<[UserProperty]>>);

impl UserProperties {
    /// The properties as a slice.
    pub fn as_slice(&self) -> &[UserProperty] {
        self.0.as_deref().unwrap_or(&[])
    }

    /// True if both share one allocation (both empty counts as shared).
    pub fn ptr_eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }

    /// How many holders share this list's allocation (0 when empty).
    pub fn share_count(&self) -> usize {
        self.0.as_ref().map_or(0, Arc::strong_count)
    }

    /// Removes every property.
    pub fn clear(&mut self) {
        self.0 = None;
    }
}

impl std::ops::Deref for UserProperties {
    type Target = [UserProperty];

    fn deref(&self) -> &[UserProperty] {
        self.as_slice()
    }
}

impl From<Vec<UserProperty>> for UserProperties {
    fn from(v: Vec<UserProperty>) -> Self {
        if v.is_empty() { Self(None) } else { Self(Some(v.into())) }
    }
}

impl FromIterator<UserProperty> for UserProperties {
    fn from_iter<I: IntoIterator<Item = UserProperty>>(iter: I) -> Self {
        iter.into_iter().collect::<Vec<_>>().into()
    }
}

impl<'a> IntoIterator for &'a UserProperties {
    type Item = &'a UserProperty;
    type IntoIter = std::slice::Iter<'a, UserProperty>;

    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

impl PartialEq for UserProperties {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl PartialEq<Vec<UserProperty>> for UserProperties {
    fn eq(&self, other: &Vec<UserProperty>) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl std::fmt::Debug for UserProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_allocation_and_empty_holds_none() {
        let a: UserProperties = vec![("k".into(), "v".into())].into();
        let b = a.clone();
        assert!(a.ptr_eq(&b));
        assert_eq!(a.share_count(), 2);
        assert_eq!(UserProperties::default().share_count(), 0);
        assert_eq!(UserProperties::from(Vec::new()).share_count(), 0);
        assert_eq!(b, vec![("k".into(), "v".into())]);
    }
}
