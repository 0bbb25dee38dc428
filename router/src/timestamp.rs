//! The UTC timestamps router objects carry (`created` of subscriptions and registrations,
//! WAMP-CRA's challenge), written as autobahn's `utcnow()` writes them.

/// `2026-11-27T21:16:36.123Z`, as autobahn's `utcnow()` writes it.
pub(crate) fn utc_timestamp(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_795_900_596_123);
        assert_eq!(utc_timestamp(t), "2026-11-28T21:16:36.123Z");
        assert_eq!(
            utc_timestamp(std::time::UNIX_EPOCH),
            "1970-01-01T00:00:00.000Z"
        );
    }
}
