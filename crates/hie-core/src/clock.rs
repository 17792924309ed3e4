//! Calendar formatting of Unix times, in UTC, for HL7 timestamps and API output. Pure functions:
//! the caller reads the clock.

/// `YYYYMMDDHHMMSS` (HL7 DTM, second precision).
pub fn hl7_timestamp(unix_secs: u64) -> String {
    let (date, (hour, minute, second)) = split(unix_secs);
    format!("{:04}{:02}{:02}{hour:02}{minute:02}{second:02}", date.0, date.1, date.2)
}

/// RFC 3339 in UTC with microseconds, e.g. `2026-11-28T04:13:28.123456Z`.
pub fn rfc3339_micros(unix_micros: i64) -> String {
    let secs = u64::try_from(unix_micros.div_euclid(1_000_000)).unwrap_or(0);
    let micros = unix_micros.rem_euclid(1_000_000);
    let ((year, month, day), (hour, minute, second)) = split(secs);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{micros:06}Z")
}

fn split(unix_secs: u64) -> ((i64, u32, u32), (u64, u64, u64)) {
    let days = i64::try_from(unix_secs / 86_400).unwrap_or(0);
    let secs_of_day = unix_secs % 86_400;
    (civil_from_days(days), (secs_of_day / 3600, (secs_of_day / 60) % 60, secs_of_day % 60))
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = u32::try_from(day_of_year - (153 * month_index + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if month_index < 10 { month_index + 3 } else { month_index - 9 }).unwrap_or(1);
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(hl7_timestamp(0), "19700101000000");
        assert_eq!(hl7_timestamp(951_782_400), "20000229000000");
        assert_eq!(hl7_timestamp(1_795_833_296), "20261128023456");
        assert_eq!(rfc3339_micros(1_795_833_296_000_042), "2026-11-28T02:34:56.000042Z");
        assert_eq!(rfc3339_micros(4_107_542_399_999_999), "2100-02-28T23:59:59.999999Z");
    }
}
