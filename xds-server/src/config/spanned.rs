//! `Spanned<T>`: a decoded value with its position, and the decoder's recovery boundary.
//!
//! A field of type `Spanned<T>` asks the decoder (`de.rs`) for its position through a private
//! protocol (a struct with a reserved name, like `serde_spanned` does for TOML). If decoding the
//! value fails, the decoder has already reported the problem at its position; the wrapper then
//! holds no value and decoding of the enclosing mapping goes on with the next key. Conversion
//! treats a missing value as "already reported" and moves on, so one mistake gives one message.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};

use super::diagnostic::{FileId, Pos};

/// The reserved struct name and keys of the protocol between `Spanned` and the decoder.
pub(crate) const NAME: &str = "$__vrata_config_spanned";
pub(crate) const FIELDS: [&str; 6] = [
    "$__vrata_file",
    "$__vrata_line",
    "$__vrata_col",
    "$__vrata_text_line",
    "$__vrata_text_col",
    "$__vrata_value",
];

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Spanned<T> {
    pos: Pos,
    text_pos: Option<Pos>,
    value: Option<T>,
}

impl<T> Spanned<T> {
    /// Where the value starts.
    pub fn pos(&self) -> Pos {
        self.pos
    }

    /// The value; `None` when it was invalid (and that was reported).
    pub fn get(&self) -> Option<&T> {
        self.value.as_ref()
    }

    /// The position of the character at `offset` (in characters) of a string value, when the
    /// file shows the value verbatim; the value's start otherwise.
    pub fn pos_at(&self, offset: usize) -> Pos {
        self.text_pos.map_or(self.pos, |p| p.right(offset))
    }
}

/// The value of an optional field if it was given and valid, else `default` (an invalid value
/// has been reported; the default lets conversion go on checking the rest).
pub(crate) fn or<T: Clone>(field: &Option<Spanned<T>>, default: T) -> T {
    field
        .as_ref()
        .and_then(Spanned::get)
        .cloned()
        .unwrap_or(default)
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Spanned<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct(NAME, &FIELDS, SpannedVisitor(PhantomData))
    }
}

struct SpannedVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for SpannedVisitor<T> {
    type Value = Spanned<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value read by vrata's config decoder")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut numbers = [0u32; 5];
        for (slot, field) in numbers.iter_mut().zip(FIELDS) {
            let key: Option<&str> = map.next_key()?;
            if key != Some(field) {
                return Err(de::Error::custom(
                    "Spanned values can only be read by vrata's config decoder",
                ));
            }
            *slot = map.next_value()?;
        }
        let [file, line, col, text_line, text_col] = numbers;
        let file = FileId(file);
        let key: Option<&str> = map.next_key()?;
        if key != Some(FIELDS[5]) {
            return Err(de::Error::custom(
                "Spanned values can only be read by vrata's config decoder",
            ));
        }
        // On error the decoder has reported the problem at its position (see `de::SpannedDe`);
        // "no value" is how the wrapper carries that on.
        let value = map.next_value::<T>().ok();
        Ok(Spanned {
            pos: Pos { file, line, col },
            text_pos: (text_line > 0).then_some(Pos {
                file,
                line: text_line,
                col: text_col,
            }),
            value,
        })
    }
}

/// Transparent: the schema is the value's.
impl<T: JsonSchema> JsonSchema for Spanned<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }

    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}
