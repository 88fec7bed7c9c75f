//! Ids and clocks: [`new_run_id`], the one run id generator, and [`now_ms`].

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A run id: 48 bits of milliseconds then 80 random bits, 32 hex digits.
/// Ids made later sort later, so new rows land at the end of the id
/// indexes instead of dirtying pages all over them.
pub fn new_run_id() -> String {
    let random = rand::random::<u128>() >> 48;
    format!("{:012x}{random:020x}", now_ms() as u64 & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    #[test]
    fn run_ids_are_unique_hex_and_time_ordered() {
        let a = super::new_run_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = super::new_run_id();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(a < b, "{a} !< {b}");
    }
}
