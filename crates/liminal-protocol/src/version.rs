//! Protocol version negotiation.

/// The newest protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// Every protocol version this build can speak, oldest first.
pub const SUPPORTED_VERSIONS: &[u16] = &[1];

/// Picks the highest version offered by the client that this build supports,
/// or `None` when the two sets do not intersect.
pub fn negotiate_version(offered: &[u16]) -> Option<u16> {
    offered
        .iter()
        .copied()
        .filter(|version| SUPPORTED_VERSIONS.contains(version))
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiate_picks_highest_common() {
        assert_eq!(negotiate_version(&[0, 1, 7]), Some(1));
    }

    #[test]
    fn negotiate_rejects_disjoint_sets() {
        assert_eq!(negotiate_version(&[2, 3]), None);
        assert_eq!(negotiate_version(&[]), None);
    }
}
