//! Tokens of PartiQL statements. Keywords are not told apart here: a bare
//! word is an [`Tok::Ident`] and the parser decides, case-insensitively.

use super::{MAX_STATEMENT_BYTES, PartiqlError};

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// A bare word: a keyword, a function or an attribute name.
    Ident(String),
    /// A double-quoted name.
    Quoted(String),
    /// A single-quoted string.
    Str(String),
    /// A number as written.
    Num(String),
    /// `?`
    Param,
    /// One of `( ) [ ] { } , . : ; *  + - / ||`.
    Punct(&'static str),
    /// `<<` or `>>`.
    Bag(&'static str),
    /// `= <> != < <= > >=`
    Cmp(&'static str),
    Eof,
}

/// Splits `src` into tokens, ending with [`Tok::Eof`].
pub fn tokenize(src: &str) -> Result<Vec<Tok>, PartiqlError> {
    if src.len() > MAX_STATEMENT_BYTES {
        return Err(PartiqlError(format!(
            "1 validation error detected: Value at 'statement' failed to satisfy constraint: Member must have length less than or equal to {MAX_STATEMENT_BYTES}"
        )));
    }
    let b = src.as_bytes();
    let mut out = Vec::new();
    let at = |i: usize| b.get(i).copied();
    let text = |from: usize, to: usize| src.get(from..to).unwrap_or_default().to_string();
    let mut i = 0;
    while let Some(c) = at(i) {
        let next = at(i + 1);
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'-' if next == Some(b'-') => {
                while at(i).is_some_and(|c| c != b'\n') {
                    i += 1;
                }
            }
            b'/' if next == Some(b'*') => {
                let end = src
                    .get(i + 2..)
                    .and_then(|rest| rest.find("*/"))
                    .ok_or_else(|| PartiqlError::syntax(""))?;
                i += 2 + end + 2;
            }
            b'\'' => {
                let (s, n) = quoted(src, i, '\'')?;
                out.push(Tok::Str(s));
                i = n;
            }
            b'"' => {
                let (s, n) = quoted(src, i, '"')?;
                out.push(Tok::Quoted(s));
                i = n;
            }
            b'0'..=b'9' => {
                let n = number_end(b, i)?;
                out.push(Tok::Num(text(i, n)));
                i = n;
            }
            b'.' if next.is_some_and(|d| d.is_ascii_digit()) => {
                let n = number_end(b, i)?;
                out.push(Tok::Num(text(i, n)));
                i = n;
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b'$' => {
                let start = i;
                while at(i).is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'$') {
                    i += 1;
                }
                out.push(Tok::Ident(text(start, i)));
            }
            _ => {
                let (tok, len) = symbol(c, next).ok_or_else(|| PartiqlError::syntax(""))?;
                out.push(tok);
                i += len;
            }
        }
    }
    out.push(Tok::Eof);
    Ok(out)
}

/// The punctuation or operator at `c` (followed by `next`) and its length.
fn symbol(c: u8, next: Option<u8>) -> Option<(Tok, usize)> {
    Some(match (c, next) {
        (b'<', Some(b'<')) => (Tok::Bag("<<"), 2),
        (b'>', Some(b'>')) => (Tok::Bag(">>"), 2),
        (b'<', Some(b'>')) => (Tok::Cmp("<>"), 2),
        (b'!', Some(b'=')) => (Tok::Cmp("<>"), 2),
        (b'<', Some(b'=')) => (Tok::Cmp("<="), 2),
        (b'>', Some(b'=')) => (Tok::Cmp(">="), 2),
        (b'|', Some(b'|')) => (Tok::Punct("||"), 2),
        (b'<', _) => (Tok::Cmp("<"), 1),
        (b'>', _) => (Tok::Cmp(">"), 1),
        (b'=', _) => (Tok::Cmp("="), 1),
        (b'?', _) => (Tok::Param, 1),
        (b'(', _) => (Tok::Punct("("), 1),
        (b')', _) => (Tok::Punct(")"), 1),
        (b'[', _) => (Tok::Punct("["), 1),
        (b']', _) => (Tok::Punct("]"), 1),
        (b'{', _) => (Tok::Punct("{"), 1),
        (b'}', _) => (Tok::Punct("}"), 1),
        (b',', _) => (Tok::Punct(","), 1),
        (b'.', _) => (Tok::Punct("."), 1),
        (b':', _) => (Tok::Punct(":"), 1),
        (b';', _) => (Tok::Punct(";"), 1),
        (b'*', _) => (Tok::Punct("*"), 1),
        (b'+', _) => (Tok::Punct("+"), 1),
        (b'-', _) => (Tok::Punct("-"), 1),
        (b'/', _) => (Tok::Punct("/"), 1),
        _ => return None,
    })
}

/// A string or name quoted by `q` starting at byte `start`, with a doubled
/// quote standing for one; returns the text and the byte after it.
fn quoted(src: &str, start: usize, q: char) -> Result<(String, usize), PartiqlError> {
    let mut out = String::new();
    let rest = src.get(start + 1..).unwrap_or_default();
    let mut chars = rest.char_indices().peekable();
    while let Some((off, ch)) = chars.next() {
        if ch == q {
            if chars.peek().is_some_and(|(_, c)| *c == q) {
                chars.next();
                out.push(q);
                continue;
            }
            return Ok((out, start + 1 + off + 1));
        }
        out.push(ch);
    }
    Err(PartiqlError::syntax("Invalid quoted string"))
}

/// The end of the number starting at `start`: digits, a fraction and an
/// exponent. An exponent, or a scale (digits after the point less the
/// exponent), beyond a 32-bit integer cannot be read, as in DynamoDB.
fn number_end(b: &[u8], start: usize) -> Result<usize, PartiqlError> {
    let digits = |mut i: usize| {
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    let mut i = digits(start);
    let mut fraction = 0i64;
    if b.get(i) == Some(&b'.') {
        let end = digits(i + 1);
        fraction = i64::try_from(end - i - 1).unwrap_or(i64::MAX);
        i = end;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        let end = digits(j);
        if end > j {
            let text = b.get(i + 1..end).and_then(|t| std::str::from_utf8(t).ok());
            let exp: i32 = text
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| PartiqlError::syntax(""))?;
            if i32::try_from(fraction - i64::from(exp)).is_err() {
                return Err(PartiqlError::syntax(""));
            }
            i = end;
        }
    }
    Ok(i)
}
