//! JSON text for SQLite parameters: a whole batch of rows travels as one bound JSON array that
//! the statement takes apart with `json_each` (RFC 8259 text), so the SQL text stays the same
//! whatever the batch holds and stays in the prepared-statement cache.
//!
//! Only what the batch statements need: arrays of scalars and arrays of rows (arrays).

use std::fmt::Write as _;

/// A JSON array being written, one element at a time.
#[derive(Debug)]
pub(crate) struct JsonArray {
    text: String,
    n_elements: usize,
}

/// One element of a [`JsonArray`] that is itself an array (a row).
#[derive(Debug)]
pub(crate) struct JsonRow<'a> {
    text: &'a mut String,
    n_values: usize,
}

impl JsonArray {
    pub(crate) fn new() -> JsonArray {
        JsonArray { text: String::from("["), n_elements: 0 }
    }

    /// Starts the next element, a row; values are added to the returned writer.
    pub(crate) fn row(&mut self) -> JsonRow<'_> {
        self.separate();
        self.text.push('[');
        JsonRow { text: &mut self.text, n_values: 0 }
    }

    pub(crate) fn int(&mut self, value: i64) {
        self.separate();
        push_int(&mut self.text, value);
    }

    pub(crate) fn finish(mut self) -> String {
        self.text.push(']');
        self.text
    }

    fn separate(&mut self) {
        if self.n_elements > 0 {
            self.text.push(',');
        }
        self.n_elements += 1;
    }
}

impl JsonRow<'_> {
    pub(crate) fn str(&mut self, value: &str) -> &mut Self {
        self.separate();
        push_str(self.text, value);
        self
    }

    pub(crate) fn opt_str(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            Some(value) => self.str(value),
            None => self.null(),
        }
    }

    pub(crate) fn int(&mut self, value: i64) -> &mut Self {
        self.separate();
        push_int(self.text, value);
        self
    }

    pub(crate) fn opt_int(&mut self, value: Option<i64>) -> &mut Self {
        match value {
            Some(value) => self.int(value),
            None => self.null(),
        }
    }

    fn null(&mut self) -> &mut Self {
        self.separate();
        self.text.push_str("null");
        self
    }

    fn separate(&mut self) {
        if self.n_values > 0 {
            self.text.push(',');
        }
        self.n_values += 1;
    }
}

impl Drop for JsonRow<'_> {
    fn drop(&mut self) {
        self.text.push(']');
    }
}

fn push_int(text: &mut String, value: i64) {
    // Writing to a String cannot fail.
    let _ = write!(text, "{value}");
}

/// A JSON string (RFC 8259 section 7): quote, backslash and control characters escaped, the rest
/// as UTF-8.
fn push_str(text: &mut String, value: &str) {
    text.push('"');
    for c in value.chars() {
        match c {
            '"' => text.push_str("\\\""),
            '\\' => text.push_str("\\\\"),
            c if u32::from(c) < FIRST_UNESCAPED => {
                let _ = write!(text, "\\u{:04x}", u32::from(c));
            }
            c => text.push(c),
        }
    }
    text.push('"');
}

/// Characters below U+0020 must be escaped in a JSON string.
const FIRST_UNESCAPED: u32 = 0x20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_scalars_are_valid_json() {
        let mut array = JsonArray::new();
        array.row().str("a\"b\\c\r\u{1}é").int(-5).opt_int(None).opt_str(Some(""));
        array.row();
        assert_eq!(array.finish(), r#"[["a\"b\\c\u000d\u0001é",-5,null,""],[]]"#);
        let mut ints = JsonArray::new();
        ints.int(1);
        ints.int(i64::MAX);
        assert_eq!(ints.finish(), "[1,9223372036854775807]");
        assert_eq!(JsonArray::new().finish(), "[]");
    }
}
