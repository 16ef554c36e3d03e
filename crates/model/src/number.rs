//! DynamoDB numbers: exact decimals with up to 38 significant digits and a
//! magnitude between 1E-130 and 9.99..E+125. No floating point anywhere.
//!
//! A [`Number`] is always normalised (trailing zeros stripped), so two equal
//! numbers have equal representations and `Display` prints DynamoDB's form:
//! plain decimal notation, no exponent, no redundant zeros.

use bigdecimal::BigDecimal;
use bigdecimal::num_bigint::{BigInt, Sign};
use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// Most significant digits a DynamoDB number may carry.
pub const MAX_NUMBER_DIGITS: usize = 38;
/// Largest decimal exponent of the most significant digit (9.9..E+125).
pub const MAX_NUMBER_EXPONENT: i64 = 125;
/// Smallest decimal exponent of the most significant digit (1E-130).
pub const MIN_NUMBER_EXPONENT: i64 = -130;
/// Most digits of a number's exponent (`1e1234567` is not a number).
pub const MAX_EXPONENT_DIGITS: usize = 6;
/// Longest number string we even try to parse, in bytes. DynamoDB rejects
/// long strings as unconvertible well before this matters.
pub const MAX_NUMBER_STRING_BYTES: usize = 1024;
/// An explicit exponent beyond plus or minus this is out of range whatever
/// the mantissa (which has at most [`MAX_NUMBER_STRING_BYTES`] digits).
const EXPONENT_SHORTCUT_LIMIT: i128 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    #[error("The parameter cannot be converted to a numeric value: {0}")]
    NotNumeric(String),
    #[error(
        "Number overflow. Attempting to store a number with magnitude larger than supported range"
    )]
    Overflow,
    #[error(
        "Number underflow. Attempting to store a number with magnitude smaller than supported range"
    )]
    Underflow,
    #[error("Attempting to store more than 38 significant digits in a Number")]
    Precision,
}

/// An exact DynamoDB number.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Number {
    /// Normalised value: no trailing zeros in the unscaled integer.
    value: BigDecimal,
}

impl Number {
    /// Parses and validates a number string as DynamoDB does.
    pub fn parse(s: &str) -> Result<Number, NumberError> {
        // An exponent far outside the range decides the answer before any
        // arithmetic (and before a huge scale is materialised), as DynamoDB
        // answers overflow or underflow for any length of exponent.
        if s.len() <= MAX_NUMBER_STRING_BYTES
            && let Some((mantissa, exp)) = s.split_once(['e', 'E'])
            && is_decimal_literal(mantissa)
            && mantissa.bytes().any(|b| (b'1'..=b'9').contains(&b))
        {
            let digits = exp.trim_start_matches(['+', '-']);
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                let negative = exp.starts_with('-');
                let far = digits
                    .parse::<i128>()
                    .map_or(true, |e| e > EXPONENT_SHORTCUT_LIMIT);
                match (far, negative) {
                    (true, false) => return Err(NumberError::Overflow),
                    (true, true) => return Err(NumberError::Underflow),
                    (false, _) => {}
                }
            }
        }
        if s.len() > MAX_NUMBER_STRING_BYTES || !is_decimal_literal(s) {
            return Err(NumberError::NotNumeric(s.to_string()));
        }
        let value = BigDecimal::from_str(s).map_err(|_| NumberError::NotNumeric(s.to_string()))?;
        Number::checked(value)
    }

    /// Validates a computed value against DynamoDB's limits.
    pub fn checked(value: BigDecimal) -> Result<Number, NumberError> {
        let value = value.normalized();
        let n = Number { value };
        if n.is_zero() {
            return Ok(n);
        }
        let exp = n.exponent();
        if exp > MAX_NUMBER_EXPONENT {
            return Err(NumberError::Overflow);
        }
        if exp < MIN_NUMBER_EXPONENT {
            return Err(NumberError::Underflow);
        }
        if n.digits().len() > MAX_NUMBER_DIGITS {
            return Err(NumberError::Precision);
        }
        Ok(n)
    }

    pub fn zero() -> Number {
        Number {
            value: BigDecimal::from(0),
        }
    }

    pub fn from_i64(v: i64) -> Number {
        Number {
            value: BigDecimal::from(v).normalized(),
        }
    }

    pub fn is_zero(&self) -> bool {
        self.value.sign() == Sign::NoSign
    }

    pub fn is_negative(&self) -> bool {
        self.value.sign() == Sign::Minus
    }

    /// The significant digits, most significant first, without sign.
    pub fn digits(&self) -> String {
        let (int, _) = self.value.as_bigint_and_exponent();
        let mut s = int.magnitude().to_string();
        if s == "0" {
            s.clear();
        }
        s
    }

    /// Decimal exponent of the most significant digit (0 for zero).
    pub fn exponent(&self) -> i64 {
        let (_, scale) = self.value.as_bigint_and_exponent();
        let d = self.digits().len() as i64;
        if d == 0 { 0 } else { d - 1 - scale }
    }

    pub fn checked_add(&self, other: &Number) -> Result<Number, NumberError> {
        Number::checked(&self.value + &other.value)
    }

    pub fn checked_sub(&self, other: &Number) -> Result<Number, NumberError> {
        Number::checked(&self.value - &other.value)
    }

    /// Size in bytes as DynamoDB counts it: one byte per two significant
    /// digits, plus one.
    pub fn size_bytes(&self) -> usize {
        self.digits().len().div_ceil(2) + 1
    }

    /// Converts to an integer when the number is integral and fits.
    pub fn to_i64(&self) -> Option<i64> {
        if !self.value.is_integer() {
            return None;
        }
        let (int, scale) = self.value.as_bigint_and_exponent();
        let int = if scale < 0 {
            int * BigInt::from(10u8).pow(u32::try_from(-scale).ok()?)
        } else {
            int
        };
        i64::try_from(int).ok()
    }
}

/// DynamoDB accepts `[+-]?digits[.digits]?([eE][+-]?digits)?` (and a bare
/// fraction like `.5`); no hex, no NaN, no infinities, no whitespace.
fn is_decimal_literal(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'+') | Some(b'-')) {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let mut digits = i - int_start;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        digits += i - frac_start;
    }
    if digits == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if matches!(b.get(i), Some(b'+') | Some(b'-')) {
            i += 1;
        }
        let exp_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == exp_start || i - exp_start > MAX_EXPONENT_DIGITS {
            return false;
        }
    }
    i == b.len()
}

impl Ord for Number {
    fn cmp(&self, other: &Self) -> Ordering {
        self.value.cmp(&other.value)
    }
}

impl PartialOrd for Number {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Number {
    /// Plain decimal notation, as DynamoDB returns numbers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0");
        }
        let digits = self.digits();
        let exp = self.exponent();
        let mut out = String::with_capacity(digits.len() + 8);
        if self.is_negative() {
            out.push('-');
        }
        if exp < 0 {
            out.push_str("0.");
            for _ in 0..(-exp - 1) {
                out.push('0');
            }
            out.push_str(&digits);
        } else {
            let int_len = (exp + 1) as usize;
            if digits.len() <= int_len {
                out.push_str(&digits);
                for _ in digits.len()..int_len {
                    out.push('0');
                }
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        }
        f.write_str(&out)
    }
}

impl fmt::Debug for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "N({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        Number::parse(s)
            .map(|n| n.to_string())
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn normalises() {
        assert_eq!(n("1.50"), "1.5");
        assert_eq!(n("1e2"), "100");
        assert_eq!(n("-0"), "0");
        assert_eq!(n("0.000"), "0");
        assert_eq!(n("+007"), "7");
        assert_eq!(n(".5"), "0.5");
        assert_eq!(n("-12.340e-3"), "-0.01234");
        assert_eq!(n("1E-130"), format!("0.{}1", "0".repeat(129)));
        assert_eq!(n("1E+125"), format!("1{}", "0".repeat(125)));
    }

    #[test]
    fn limits() {
        assert!(n("1E+126").starts_with("Number overflow"));
        assert!(n("1E-131").starts_with("Number underflow"));
        assert!(n(&"1".repeat(39)).starts_with("Attempting to store more than 38"));
        assert_eq!(
            n(&format!("{}000", "1".repeat(38))),
            format!("{}000", "1".repeat(38))
        );
        for bad in [
            "abc", "", "1e", "NaN", "Infinity", "0x10", " 1", "1 ", ".", "-",
        ] {
            assert!(
                n(bad).starts_with("The parameter cannot be converted"),
                "{bad}"
            );
        }
    }

    #[test]
    fn arithmetic_is_exact() {
        let a = Number::parse("0.1").unwrap();
        let b = Number::parse("0.2").unwrap();
        assert_eq!(a.checked_add(&b).unwrap().to_string(), "0.3");
        assert_eq!(b.checked_sub(&a).unwrap().to_string(), "0.1");
        let big = Number::parse("9.9999999999999999999999999999999999999E+125").unwrap();
        assert_eq!(big.checked_add(&big), Err(NumberError::Overflow));
    }

    #[test]
    fn huge_exponents_are_overflow_or_underflow() {
        assert_eq!(
            Number::parse("1.0e100000000").unwrap_err(),
            NumberError::Overflow
        );
        assert_eq!(
            Number::parse("-1e99999999999999999999999").unwrap_err(),
            NumberError::Overflow
        );
        assert_eq!(
            Number::parse("1e-100000000").unwrap_err(),
            NumberError::Underflow
        );
        // Any length of exponent (ScyllaDB's suite checks this against DynamoDB).
        assert_eq!(
            Number::parse("1e1234567").unwrap_err(),
            NumberError::Overflow
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(Number::parse("123").unwrap().size_bytes(), 3);
        assert_eq!(Number::parse("1000").unwrap().size_bytes(), 2);
        assert_eq!(Number::parse("0").unwrap().size_bytes(), 1);
    }
}
