//! Tokens of the expression language, each with its byte span so syntax
//! errors can quote the text near them as DynamoDB does.

use crate::{ExprError, ExprKind};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    /// A bare word: an attribute name, a keyword or a function name.
    Ident(String),
    /// `#name`
    Name(String),
    /// `:value`
    Value(String),
    /// Digits inside `[ ]`.
    Int(String),
    LBracket,
    RBracket,
    LParen,
    RParen,
    Dot,
    Comma,
    Plus,
    Minus,
    Cmp(&'static str),
    /// Punctuation DynamoDB's lexer reads as a token (so the error is a
    /// syntax error quoting it) though no rule of the grammar accepts it.
    Stray(&'static str),
    Eof,
}

#[derive(Debug, Clone)]
pub struct Token {
    pub tok: Tok,
    pub start: usize,
    pub end: usize,
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

pub fn lex(src: &str, kind: ExprKind) -> Result<Vec<Token>, ExprError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let tok = match c {
            b'[' => single(&mut i, Tok::LBracket),
            b']' => single(&mut i, Tok::RBracket),
            b'(' => single(&mut i, Tok::LParen),
            b')' => single(&mut i, Tok::RParen),
            b'.' => single(&mut i, Tok::Dot),
            b',' => single(&mut i, Tok::Comma),
            b'+' => single(&mut i, Tok::Plus),
            b'-' => single(&mut i, Tok::Minus),
            b'=' => single(&mut i, Tok::Cmp("=")),
            b'!' => single(&mut i, Tok::Stray("!")),
            b'<' | b'>' => {
                let next = b.get(i + 1).copied();
                let (sym, len) = match (c, next) {
                    (b'<', Some(b'>')) => ("<>", 2),
                    (b'<', Some(b'=')) => ("<=", 2),
                    (b'>', Some(b'=')) => (">=", 2),
                    (b'<', _) => ("<", 1),
                    _ => (">", 1),
                };
                i += len;
                Tok::Cmp(sym)
            }
            b'#' | b':' => {
                i += 1;
                while i < b.len() && is_word_byte(b[i]) {
                    i += 1;
                }
                let text = src[start..i].to_string();
                if text.len() == 1 {
                    return Err(syntax(kind, &text));
                }
                if c == b'#' {
                    Tok::Name(text)
                } else {
                    Tok::Value(text)
                }
            }
            c if c.is_ascii_digit() => {
                while i < b.len() && is_word_byte(b[i]) {
                    i += 1;
                }
                let text = &src[start..i];
                if !text.bytes().all(|d| d.is_ascii_digit()) {
                    return Err(syntax(kind, text));
                }
                Tok::Int(text.to_string())
            }
            // A bare name starts with a letter: DynamoDB's lexer does not
            // read `_abc` as a name (`#_abc` is fine).
            b'_' => return Err(syntax(kind, "_")),
            c if is_word_byte(c) => {
                while i < b.len() && is_word_byte(b[i]) {
                    i += 1;
                }
                Tok::Ident(src[start..i].to_string())
            }
            _ => {
                let ch_len = src[start..].chars().next().map_or(1, |ch| ch.len_utf8());
                let text = &src[start..start + ch_len];
                return Err(ExprError::invalid(
                    kind,
                    format!("Invalid character encountered; character: {text}"),
                ));
            }
        };
        out.push(Token { tok, start, end: i });
    }
    out.push(Token {
        tok: Tok::Eof,
        start: b.len(),
        end: b.len(),
    });
    Ok(out)
}

fn single(i: &mut usize, t: Tok) -> Tok {
    *i += 1;
    t
}

fn syntax(kind: ExprKind, text: &str) -> ExprError {
    ExprError::invalid(
        kind,
        format!("Syntax error; token: \"{text}\", near: \"{text}\""),
    )
}
