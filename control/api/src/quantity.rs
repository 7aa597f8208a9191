//! Kubernetes resource quantities (`100m`, `1`, `128Mi`, `1G`, `1e3`).
//!
//! The grammar and rounding follow `k8s.io/apimachinery/pkg/api/resource`: a signed
//! decimal number, then a binary SI suffix (`Ki` … `Ei`), a decimal SI suffix (`n`, `u`,
//! `m`, ``, `k`, `M`, `G`, `T`, `P`, `E`) or a decimal exponent (`e3`, `E-2`). Values are
//! held exactly as a count of nano-units in an `i128` (values finer than a nano-unit are
//! rounded away from zero, as Kubernetes does), which is enough for every quantity a
//! cluster meets (up to about 1.7e29 units). Equality and ordering compare the amount
//! only, so `1Gi == 1073741824`. `Display` gives Kubernetes' canonical form (`1.5Gi` ->
//! `1536Mi`, `1000m` -> `1`, `0.5` -> `500m`). Hand-written: no maintained crate matches
//! these exact semantics.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use serde_json::Value;

const NANOS_PER_UNIT: i128 = 1_000_000_000;

/// Why a string is not a quantity; messages are Kubernetes'.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The text does not have the shape `<number><suffix>`.
    #[error(
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )]
    FormatWrong,
    /// The number part cannot be read.
    #[error("unable to parse numeric part of quantity")]
    Numeric,
    /// The suffix is not one Kubernetes knows.
    #[error("unable to parse quantity's suffix")]
    Suffix,
    /// The value does not fit the representation (beyond about 1.7e29 units).
    #[error("quantity is too large")]
    TooLarge,
    /// A JSON value that is neither a string nor a number.
    #[error("quantities must be a string or a number")]
    NotAQuantity,
}

/// How a quantity prefers to be written, taken from the suffix it was parsed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantityFormat {
    /// Powers of ten with SI suffixes (`m`, `k`, `M`...), also used for no suffix.
    DecimalSI,
    /// Powers of 1024 (`Ki`, `Mi`...).
    BinarySI,
    /// `e<exponent>` notation.
    DecimalExponent,
}

/// An exact resource amount, e.g. CPU in cores or memory in bytes.
#[derive(Clone, Copy, Debug)]
pub struct Quantity {
    nanos: i128,
    format: QuantityFormat,
}

/// Parses a Kubernetes quantity string (`parse_quantity("250m")`).
pub fn parse_quantity(s: &str) -> Result<Quantity, QuantityError> {
    Quantity::parse(s)
}

impl Quantity {
    /// Zero, written `0`.
    pub fn zero() -> Self {
        Quantity {
            nanos: 0,
            format: QuantityFormat::DecimalSI,
        }
    }

    /// A quantity of `nanos` nano-units written in `format`.
    pub fn from_nanos(nanos: i128, format: QuantityFormat) -> Self {
        Quantity { nanos, format }
    }

    /// A quantity of `milli` thousandths of a unit (e.g. millicores), written in decimal SI.
    pub fn from_milli(milli: i64) -> Self {
        Quantity {
            nanos: i128::from(milli) * 1_000_000,
            format: QuantityFormat::DecimalSI,
        }
    }

    /// A whole number of units (e.g. bytes) written in `format`.
    pub fn from_units(units: i64, format: QuantityFormat) -> Self {
        Quantity {
            nanos: i128::from(units) * NANOS_PER_UNIT,
            format,
        }
    }

    /// Parses a quantity string.
    pub fn parse(s: &str) -> Result<Self, QuantityError> {
        if s.is_empty() {
            return Err(QuantityError::FormatWrong);
        }
        let parts = split_quantity(s)?;
        let (base, exponent, format) =
            interpret_suffix(parts.suffix).ok_or(QuantityError::Suffix)?;
        let magnitude = magnitude_nanos(parts.num, parts.denom, base, exponent)?;
        let nanos = if parts.positive {
            magnitude
        } else {
            -magnitude
        };
        // Kubernetes shows binary quantities below one unit in decimal.
        let format = if format == QuantityFormat::BinarySI && magnitude < NANOS_PER_UNIT {
            QuantityFormat::DecimalSI
        } else {
            format
        };
        Ok(Quantity { nanos, format })
    }

    /// Reads a quantity from JSON, where it is a string (`"128Mi"`) or a bare number (`1`).
    pub fn from_json(value: &Value) -> Result<Self, QuantityError> {
        match value {
            Value::String(s) => Self::parse(s),
            Value::Number(n) => Self::parse(&n.to_string()),
            _ => Err(QuantityError::NotAQuantity),
        }
    }

    /// The exact amount in nano-units.
    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    /// The amount in thousandths of a unit, rounded away from zero (`MilliValue`).
    pub fn milli_value(&self) -> i128 {
        div_away_from_zero(self.nanos, 1_000_000)
    }

    /// The amount in whole units, rounded away from zero (`Value`).
    pub fn value(&self) -> i128 {
        div_away_from_zero(self.nanos, NANOS_PER_UNIT)
    }

    /// The preferred notation.
    pub fn format(&self) -> QuantityFormat {
        self.format
    }

    /// Whether the amount is zero.
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// Whether the amount is below zero.
    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// `self + other` in `self`'s notation, `None` on overflow.
    pub fn checked_add(self, other: Quantity) -> Option<Quantity> {
        Some(Quantity {
            nanos: self.nanos.checked_add(other.nanos)?,
            format: self.format,
        })
    }

    /// `self - other` in `self`'s notation, `None` on overflow.
    pub fn checked_sub(self, other: Quantity) -> Option<Quantity> {
        Some(Quantity {
            nanos: self.nanos.checked_sub(other.nanos)?,
            format: self.format,
        })
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl Hash for Quantity {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.nanos.hash(state);
    }
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantity::parse(s)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0");
        }
        let binary = self.format == QuantityFormat::BinarySI
            && self.nanos.abs() >= 1024 * NANOS_PER_UNIT
            && self.nanos % NANOS_PER_UNIT == 0;
        if binary {
            let mut units = self.nanos / NANOS_PER_UNIT;
            let mut power = 0;
            while power < BINARY_SUFFIXES.len() - 1 && units % 1024 == 0 {
                units /= 1024;
                power += 1;
            }
            return write!(f, "{units}{}", BINARY_SUFFIXES[power]);
        }
        let (mantissa, exponent) = canonical_decimal(self.nanos);
        let suffix = match self.format {
            QuantityFormat::DecimalExponent => None,
            _ => decimal_si_suffix(exponent),
        };
        match suffix {
            Some(s) => write!(f, "{mantissa}{s}"),
            None if exponent == 0 => write!(f, "{mantissa}"),
            None => write!(f, "{mantissa}e{exponent}"),
        }
    }
}

const BINARY_SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];

fn decimal_si_suffix(exponent: i32) -> Option<&'static str> {
    Some(match exponent {
        -9 => "n",
        -6 => "u",
        -3 => "m",
        0 => "",
        3 => "k",
        6 => "M",
        9 => "G",
        12 => "T",
        15 => "P",
        18 => "E",
        _ => return None,
    })
}

/// `nanos` as `mantissa * 10^exponent` with the exponent a multiple of three and as
/// large as possible (Kubernetes' `AsCanonicalBytes`).
fn canonical_decimal(nanos: i128) -> (i128, i32) {
    let mut mantissa = nanos;
    let mut exponent: i32 = -9;
    while mantissa % 10 == 0 {
        mantissa /= 10;
        exponent += 1;
    }
    let r = exponent.rem_euclid(3);
    match mantissa.checked_mul(10i128.pow(r as u32)) {
        Some(m) => (m, exponent - r),
        None => (mantissa, exponent),
    }
}

fn div_away_from_zero(n: i128, d: i128) -> i128 {
    let q = n / d;
    if n % d == 0 {
        q
    } else if n > 0 {
        q + 1
    } else {
        q - 1
    }
}

struct QuantityParts<'a> {
    positive: bool,
    num: &'a str,
    denom: &'a str,
    suffix: &'a str,
}

/// Splits `[+-]digits[.digits]suffix` the way Kubernetes' `parseQuantityString` does,
/// including its leniencies (`1.`, `.5`, and a lone suffix reading as zero).
fn split_quantity(s: &str) -> Result<QuantityParts<'_>, QuantityError> {
    let b = s.as_bytes();
    let end = b.len();
    let mut pos = 0;
    let mut positive = true;
    match b.first() {
        Some(b'-') => {
            positive = false;
            pos += 1;
        }
        Some(b'+') => pos += 1,
        _ => {}
    }
    while pos < end && b[pos] == b'0' {
        pos += 1;
    }
    let num_start = pos;
    while pos < end && b[pos].is_ascii_digit() {
        pos += 1;
    }
    let num = &s[num_start..pos];
    let mut denom = "";
    if pos < end && b[pos] == b'.' {
        pos += 1;
        let denom_start = pos;
        while pos < end && b[pos].is_ascii_digit() {
            pos += 1;
        }
        denom = &s[denom_start..pos];
    }
    let suffix_start = pos;
    while pos < end && b"eEinumkKMGTP".contains(&b[pos]) {
        pos += 1;
    }
    if pos < end && matches!(b[pos], b'-' | b'+') {
        pos += 1;
    }
    while pos < end && b[pos].is_ascii_digit() {
        pos += 1;
    }
    if pos < end {
        return Err(QuantityError::FormatWrong);
    }
    Ok(QuantityParts {
        positive,
        num,
        denom,
        suffix: &s[suffix_start..],
    })
}

/// `(base, exponent, format)` of a suffix: the value is multiplied by `base^exponent`.
fn interpret_suffix(suffix: &str) -> Option<(u32, i64, QuantityFormat)> {
    use QuantityFormat::*;
    let decimal = |e| Some((10, e, DecimalSI));
    let binary = |e| Some((2, e, BinarySI));
    match suffix {
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "" => decimal(0),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        s if s.len() > 1 && (s.starts_with('e') || s.starts_with('E')) => {
            s[1..].parse::<i64>().ok().map(|e| (10, e, DecimalExponent))
        }
        _ => None,
    }
}

/// The magnitude of `num.denom * base^exponent` in nano-units, rounded away from zero.
fn magnitude_nanos(
    num: &str,
    denom: &str,
    base: u32,
    exponent: i64,
) -> Result<i128, QuantityError> {
    let mut digits = format!("{num}{denom}");
    let mut exp10: i64 = 9 - denom.len() as i64;
    let shift2: u32 = if base == 2 {
        u32::try_from(exponent).map_err(|_| QuantityError::Suffix)?
    } else {
        0
    };
    if base == 10 {
        exp10 = exp10.checked_add(exponent).ok_or(QuantityError::TooLarge)?;
    }
    while digits.ends_with('0') {
        digits.pop();
        exp10 += 1;
    }
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return Ok(0);
    }
    let mantissa: i128 = digits.parse().map_err(|_| QuantityError::TooLarge)?;
    // Binary suffixes shift by at most 60 bits (`Ei`).
    let scaled = mantissa
        .checked_mul(1i128 << shift2.min(60))
        .ok_or(QuantityError::TooLarge)?;
    if exp10 >= 0 {
        let factor = u32::try_from(exp10)
            .ok()
            .and_then(|e| 10i128.checked_pow(e));
        factor
            .and_then(|f| scaled.checked_mul(f))
            .ok_or(QuantityError::TooLarge)
    } else {
        match u32::try_from(-exp10)
            .ok()
            .and_then(|e| 10i128.checked_pow(e))
        {
            Some(divisor) => Ok(div_away_from_zero(scaled, divisor)),
            // Far below a nano-unit: the smallest non-zero amount.
            None => Ok(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        match parse_quantity(s) {
            Ok(q) => q,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn parses_decimal_binary_and_exponent_suffixes() {
        assert_eq!(q("100m").milli_value(), 100);
        assert_eq!(q("1").milli_value(), 1000);
        assert_eq!(q("128Mi").value(), 128 * 1024 * 1024);
        assert_eq!(q("1G").value(), 1_000_000_000);
        assert_eq!(q("1e3").value(), 1000);
        assert_eq!(q("1E3").value(), 1000);
        assert_eq!(q("1.5").milli_value(), 1500);
        assert_eq!(q(".5").milli_value(), 500);
        assert_eq!(q("1.").value(), 1);
        assert_eq!(q("-2k").value(), -2000);
        assert_eq!(q("+3").value(), 3);
        assert_eq!(q("5n").nanos(), 5);
        assert_eq!(q("2u").nanos(), 2000);
        assert_eq!(q("1e-3").milli_value(), 1);
        assert_eq!(q("1Ei").value(), 1i128 << 60);
        assert_eq!(q("0").nanos(), 0);
        assert_eq!(q("000").nanos(), 0);
    }

    #[test]
    fn rejects_what_kubernetes_rejects() {
        assert_eq!(parse_quantity(""), Err(QuantityError::FormatWrong));
        assert_eq!(parse_quantity("abc"), Err(QuantityError::FormatWrong));
        assert_eq!(parse_quantity("1.5.5"), Err(QuantityError::FormatWrong));
        assert_eq!(parse_quantity(" 1"), Err(QuantityError::FormatWrong));
        assert_eq!(parse_quantity("1 "), Err(QuantityError::FormatWrong));
        assert_eq!(parse_quantity("1ki"), Err(QuantityError::Suffix));
        assert_eq!(parse_quantity("1e"), Err(QuantityError::Suffix));
        assert_eq!(parse_quantity("1Mi3"), Err(QuantityError::Suffix));
        assert_eq!(parse_quantity("1e100"), Err(QuantityError::TooLarge));
        assert!(
            QuantityError::FormatWrong
                .to_string()
                .starts_with("quantities must match the regular expression")
        );
    }

    #[test]
    fn rounds_amounts_finer_than_a_nano_unit_away_from_zero() {
        assert_eq!(q("0.1n").nanos(), 1);
        assert_eq!(q("-0.1n").nanos(), -1);
        assert_eq!(q("1e-30").nanos(), 1);
        assert_eq!(q("1.5m").milli_value(), 2);
    }

    #[test]
    fn compares_by_amount_regardless_of_notation() {
        assert_eq!(q("1Gi"), q("1073741824"));
        assert_eq!(q("1000m"), q("1"));
        assert!(q("500m") < q("1"));
        assert!(q("2Gi") > q("2G"));
    }

    #[test]
    fn displays_the_canonical_form() {
        for (input, canonical) in [
            ("1000m", "1"),
            ("0.5", "500m"),
            ("1.5Gi", "1536Mi"),
            ("1024Mi", "1Gi"),
            ("1536", "1536"),
            ("512Ki", "512Ki"),
            ("0.5Ki", "512"),
            ("1e3", "1e3"),
            ("1000e0", "1e3"),
            ("1.5e3", "1500"),
            ("100m", "100m"),
            ("1500M", "1500M"),
            ("2000000", "2M"),
            ("-1k", "-1k"),
            ("0", "0"),
            ("10e-1", "1"),
            ("1.5Ki", "1536"),
        ] {
            assert_eq!(q(input).to_string(), canonical, "{input}");
        }
    }

    #[test]
    fn reads_strings_and_numbers_from_json() {
        assert_eq!(
            Quantity::from_json(&serde_json::json!("250m")).map(|q| q.milli_value()),
            Ok(250)
        );
        assert_eq!(
            Quantity::from_json(&serde_json::json!(2)).map(|q| q.value()),
            Ok(2)
        );
        assert_eq!(
            Quantity::from_json(&serde_json::json!(0.5)).map(|q| q.milli_value()),
            Ok(500)
        );
        assert_eq!(
            Quantity::from_json(&serde_json::json!(true)),
            Err(QuantityError::NotAQuantity)
        );
    }

    #[test]
    fn adds_and_subtracts_exactly() {
        let sum = q("100m").checked_add(q("1.9")).map(|s| s.to_string());
        assert_eq!(sum.as_deref(), Some("2"));
        assert_eq!(
            q("1Gi")
                .checked_sub(q("512Mi"))
                .map(|d| d.to_string())
                .as_deref(),
            Some("512Mi")
        );
        assert_eq!(Quantity::from_milli(1500).to_string(), "1500m");
        assert_eq!(
            Quantity::from_units(2048, QuantityFormat::BinarySI).to_string(),
            "2Ki"
        );
    }
}
