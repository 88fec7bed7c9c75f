//! Ids and clocks: [`new_run_id`], the one run id generator, [`now_ms`],
//! and UTC days ([`utc_day`], [`day_name`]).

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The UTC day (days since the Unix epoch) the time `unix_ms` falls in.
pub fn utc_day(unix_ms: i64) -> i64 {
    unix_ms.div_euclid(86_400_000)
}

/// Day `day` (since the Unix epoch) as YYYY-MM-DD.
pub fn day_name(day: i64) -> String {
    let secs = u64::try_from(day.max(0))
        .unwrap_or(0)
        .saturating_mul(86_400);
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339(at).to_string()[..10].to_string()
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
