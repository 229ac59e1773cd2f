//! Canonical JSON in the manner of RFC 8785 (JCS): object members sorted by their
//! UTF-16 code units, no insignificant white space, strings with the minimal JSON
//! escapes, numbers in ECMAScript's shortest form. Two encoders that agree on the
//! value agree on the bytes, which is what makes a hash over it meaningful.

use serde_json::{Number, Value};
use std::fmt::Write;

pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

pub(crate) fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            // The map iterates in byte (code point) order, which is UTF-16 order unless
            // a key holds a character beyond the BMP (4-byte UTF-8, lead byte 0xF0+).
            let entries: Vec<_> = if map.keys().all(|k| k.bytes().all(|b| b < 0xF0)) {
                map.iter().collect()
            } else {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
                entries
            };
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

pub(crate) fn write_string(out: &mut String, s: &str) {
    out.push('"');
    // Copy runs that need no escape whole; escapes are rare.
    let mut run = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            0x0c => "\\f",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..0x20 => "",
            _ => continue,
        };
        out.push_str(&s[run..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        run = i + 1;
    }
    out.push_str(&s[run..]);
    out.push('"');
}

fn write_number(out: &mut String, n: &Number) {
    if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(f) = n.as_f64() {
        out.push_str(&es6_number(f));
    }
}

/// ECMAScript `Number.prototype.toString` for finite values (JSON has no others).
fn es6_number(f: f64) -> String {
    if f == 0.0 {
        return "0".to_string();
    }
    // `{:e}` yields the shortest round-tripping digits, e.g. "-1.2345e-7".
    let sci = format!("{:e}", f.abs());
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let k = digits.len() as i32;
    let n = exponent + 1; // position of the decimal point relative to the digits
    let sign = if f < 0.0 { "-" } else { "" };
    let body = if k <= n && n <= 21 {
        format!("{digits}{}", "0".repeat((n - k) as usize))
    } else if 0 < n && n <= 21 {
        format!("{}.{}", &digits[..n as usize], &digits[n as usize..])
    } else if -6 < n && n <= 0 {
        format!("0.{}{digits}", "0".repeat((-n) as usize))
    } else {
        let exp = n - 1;
        let exp_sign = if exp >= 0 { "+" } else { "-" };
        let mantissa = if k == 1 {
            digits.clone()
        } else {
            format!("{}.{}", &digits[..1], &digits[1..])
        };
        format!("{mantissa}e{exp_sign}{}", exp.abs())
    };
    format!("{sign}{body}")
}

/// SHA-256 (hex) of a value's canonical encoding: the digest provenance events carry in
/// place of payloads.
pub fn sha256_hex(value: &Value) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(to_string(value).as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_and_drops_whitespace() {
        let v = json!({"b": 1, "a": [true, null, "x"], "c": {"z": 1, "y": 2}});
        assert_eq!(
            to_string(&v),
            r#"{"a":[true,null,"x"],"b":1,"c":{"y":2,"z":1}}"#
        );
    }

    #[test]
    fn numbers_follow_ecmascript() {
        let cases = [
            (0.0, "0"),
            (1.0, "1"),
            (-1.5, "-1.5"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (0.000001, "0.000001"),
            (1e-7, "1e-7"),
            (123.456, "123.456"),
            (4.5e-10, "4.5e-10"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
        ];
        for (f, want) in cases {
            assert_eq!(es6_number(f), want, "{f}");
        }
    }

    #[test]
    fn strings_use_minimal_escapes() {
        let v = json!("a\"b\\c\n\u{1}é€/");
        assert_eq!(to_string(&v), "\"a\\\"b\\\\c\\n\\u0001é€/\"");
    }

    #[test]
    fn key_order_is_utf16_not_utf8() {
        // U+FF61 sorts after U+1F600's surrogate pair in UTF-16, before it in UTF-8.
        let v = json!({"\u{ff61}": 1, "\u{1f600}": 2});
        assert_eq!(to_string(&v), "{\"\u{1f600}\":2,\"\u{ff61}\":1}");
    }
}
