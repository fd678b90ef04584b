//! A `serde::Deserializer` over the positioned tree that reports problems and keeps going.
//!
//! The DTOs (`dto.rs`) are plain `#[derive(Deserialize)]` types; this decoder gives them what
//! off-the-shelf YAML deserializers do not:
//! - unknown keys are found here (serde hands every struct's field list to `deserialize_struct`),
//!   reported with a "did you mean" hint, and skipped, so decoding goes on;
//! - keys of later releases (`tls`, `auth`, ...) and known mistakes (`on:` for `retry_on:`) get
//!   their own message, via [`Decoder::hint`];
//! - type errors are reported at the value that has the wrong type;
//! - `Spanned<T>` (see `spanned.rs`) receives positions and is where an error stops: it is
//!   reported, the field holds no value, and the enclosing mapping continues with its next key;
//! - a missing required key is reported at the mapping that lacks it.

use std::cell::RefCell;
use std::fmt;

use serde::de::value::{BorrowedStrDeserializer, StrDeserializer, U32Deserializer};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, MapAccess, SeqAccess, VariantAccess,
    Visitor,
};

use super::diagnostic::{Pos, Sink, missing_key, one_of, unknown_key, unknown_value};
use super::spanned;
use super::yaml::{Kind, Node, Scalar, Value};

/// A special message for a key that a struct does not accept.
pub(crate) struct KeyHint {
    pub message: String,
    /// The field the key was meant to be (its absence is then not reported again).
    pub stands_for: Option<&'static str>,
}

/// Looks up a [`KeyHint`] by struct name (serde's, i.e. after `rename`) and key.
pub(crate) type HintFn = fn(&str, &str) -> Option<KeyHint>;

pub(crate) struct Decoder<'a> {
    pub sink: &'a Sink,
    pub hint: HintFn,
}

impl Decoder<'_> {
    /// Decodes `node` as a `T`, reporting every problem; `None` if the result is unusable.
    pub fn decode<T: DeserializeOwned>(&self, node: &Node) -> Option<T> {
        match T::deserialize(NodeDe { node, cx: self }) {
            Ok(v) => Some(v),
            Err(e) => {
                self.report(e, node.pos);
                None
            }
        }
    }

    fn report(&self, error: Error, pos: Pos) {
        match error.at(pos) {
            Error::At { pos: at, message } => self.sink.error(at.unwrap_or(pos), message),
            Error::MissingField(_) | Error::Recorded => {}
        }
    }
}

/// The decoder's error. Positions are attached by the innermost node that sees the error.
#[derive(Debug)]
pub(crate) enum Error {
    At {
        pos: Option<Pos>,
        message: String,
    },
    /// serde's derive reports a missing field; the mapping that lacks it attaches its position.
    MissingField(&'static str),
    /// Already reported; carried up to the next `Spanned` boundary without a new message.
    Recorded,
}

impl Error {
    fn at(self, here: Pos) -> Self {
        match self {
            Error::At { pos: None, message } => Error::At {
                pos: Some(here),
                message,
            },
            Error::MissingField(field) => Error::At {
                pos: Some(here),
                message: missing_key(field),
            },
            other => other,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::At { message, .. } => f.write_str(message),
            Error::MissingField(field) => f.write_str(&missing_key(field)),
            Error::Recorded => f.write_str("already reported"),
        }
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::At {
            pos: None,
            message: msg.to_string(),
        }
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::custom(format_args!("expected {exp}, found {unexp}"))
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::custom(format_args!("expected {exp}, found {unexp}"))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        Self::custom(unknown_value(variant, expected))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Self::custom(unknown_key(field, expected))
    }

    fn missing_field(field: &'static str) -> Self {
        Error::MissingField(field)
    }

    fn duplicate_field(field: &'static str) -> Self {
        Self::custom(format_args!("key `{field}` is given twice"))
    }
}

/// How a node is described in "expected X, found Y".
fn describe(node: &Node) -> String {
    match &node.kind {
        Kind::Scalar(s) => match s.value {
            Value::Null if s.text.is_empty() => "nothing".to_owned(),
            Value::Null => "null".to_owned(),
            Value::Bool(b) => format!("boolean `{b}`"),
            Value::Int(_) => format!("integer `{}`", s.text),
            Value::Float(_) => format!("number `{}`", s.text),
            Value::Str => {
                let mut shown: String = s.text.chars().take(40).collect();
                if shown.len() < s.text.len() {
                    shown.push('…');
                }
                format!("string {shown:?}")
            }
        },
        Kind::Seq(_) => "a list".to_owned(),
        Kind::Map(_) => "a mapping".to_owned(),
    }
}

#[derive(Clone, Copy)]
struct NodeDe<'a> {
    node: &'a Node,
    cx: &'a Decoder<'a>,
}

impl<'a> NodeDe<'a> {
    fn expected(&self, what: &str) -> Error {
        Error::At {
            pos: Some(self.node.pos),
            message: format!("expected {what}, found {}", describe(self.node)),
        }
    }

    fn scalar(&self) -> Option<&'a Scalar> {
        match &self.node.kind {
            Kind::Scalar(s) => Some(s),
            Kind::Seq(_) | Kind::Map(_) => None,
        }
    }

    /// Fails for values whose problem was already reported (e.g. an unset `${VAR}`).
    fn check(&self) -> Result<(), Error> {
        match self.scalar() {
            Some(s) if s.reported => Err(Error::Recorded),
            _ => Ok(()),
        }
    }

    /// Text usable where a string is expected: any non-null scalar. A plain `2` or `true` is
    /// accepted as the text it is written as, like most YAML loaders do for string targets.
    fn text(&self) -> Option<&'a str> {
        self.scalar()
            .filter(|s| s.value != Value::Null)
            .map(|s| s.text.as_str())
    }

    fn int(&self) -> Option<i64> {
        match self.scalar()?.value {
            Value::Int(i) => Some(i),
            _ => None,
        }
    }

    /// Reports a failed value at its position and tells the caller to carry on without it.
    fn report(&self, error: Error) -> Error {
        self.cx.report(error, self.node.pos);
        Error::Recorded
    }
}

macro_rules! integer {
    ($($method:ident $ty:ty => $visit:ident),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            self.check()?;
            let Some(i) = self.int() else {
                return Err(self.expected("an integer"));
            };
            match <$ty>::try_from(i) {
                Ok(x) => visitor.$visit(x).map_err(|e: Error| e.at(self.node.pos)),
                Err(_) => Err(self.expected(&format!(
                    "an integer from {} to {}",
                    <$ty>::MIN,
                    <$ty>::MAX
                ))),
            }
        }
    )*};
}

impl<'de> de::Deserializer<'de> for NodeDe<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.check()?;
        let result = match &self.node.kind {
            Kind::Scalar(s) => match s.value {
                Value::Null => visitor.visit_unit(),
                Value::Bool(b) => visitor.visit_bool(b),
                Value::Int(i) => visitor.visit_i64(i),
                Value::Float(f) => visitor.visit_f64(f),
                Value::Str => visitor.visit_str(&s.text),
            },
            Kind::Seq(items) => visitor.visit_seq(SeqDe {
                items: items.iter(),
                cx: self.cx,
            }),
            Kind::Map(entries) => visitor.visit_map(MapDe {
                entries: entries.iter(),
                value: None,
                cx: self.cx,
            }),
        };
        result.map_err(|e: Error| e.at(self.node.pos))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.check()?;
        match self.scalar().map(|s| s.value) {
            Some(Value::Bool(b)) => visitor
                .visit_bool(b)
                .map_err(|e: Error| e.at(self.node.pos)),
            _ => Err(self.expected("`true` or `false`")),
        }
    }

    integer! {
        deserialize_i8 i8 => visit_i8,
        deserialize_i16 i16 => visit_i16,
        deserialize_i32 i32 => visit_i32,
        deserialize_i64 i64 => visit_i64,
        deserialize_u8 u8 => visit_u8,
        deserialize_u16 u16 => visit_u16,
        deserialize_u32 u32 => visit_u32,
        deserialize_u64 u64 => visit_u64,
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.check()?;
        let result = match self.scalar().map(|s| s.value) {
            Some(Value::Float(f)) => visitor.visit_f64(f),
            Some(Value::Int(i)) => visitor.visit_i64(i),
            _ => return Err(self.expected("a number")),
        };
        result.map_err(|e: Error| e.at(self.node.pos))
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.check()?;
        match self.text() {
            Some(text) => visitor
                .visit_str(text)
                .map_err(|e: Error| e.at(self.node.pos)),
            None => Err(self.expected("a string")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        // No `check` here: a value reported earlier must reach the `Spanned` inside the option,
        // which stops it there; failing here would drop the whole enclosing mapping.
        match self.scalar().map(|s| s.value) {
            Some(Value::Null) => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
        .map_err(|e: Error| e.at(self.node.pos))
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.check()?;
        match self.scalar().map(|s| s.value) {
            Some(Value::Null) => visitor.visit_unit().map_err(|e: Error| e.at(self.node.pos)),
            _ => Err(self.expected("nothing")),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.check()?;
        match &self.node.kind {
            Kind::Seq(items) => visitor
                .visit_seq(SeqDe {
                    items: items.iter(),
                    cx: self.cx,
                })
                .map_err(|e: Error| e.at(self.node.pos)),
            _ => Err(self.expected("a list")),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.check()?;
        match &self.node.kind {
            Kind::Map(entries) => visitor
                .visit_map(MapDe {
                    entries: entries.iter(),
                    value: None,
                    cx: self.cx,
                })
                .map_err(|e: Error| e.at(self.node.pos)),
            _ => Err(self.expected("a mapping")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        if name == spanned::NAME {
            return visitor.visit_map(SpannedDe { de: self, step: 0 });
        }
        self.check()?;
        match &self.node.kind {
            Kind::Map(entries) => {
                let hinted = RefCell::new(Vec::new());
                let result = visitor.visit_map(StructDe {
                    entries: entries.iter(),
                    value: None,
                    name,
                    fields,
                    hinted: &hinted,
                    cx: self.cx,
                });
                match result {
                    Err(Error::MissingField(field)) if hinted.borrow().contains(&field) => {
                        Err(Error::Recorded)
                    }
                    other => other.map_err(|e: Error| e.at(self.node.pos)),
                }
            }
            // A type with a short scalar form (e.g. an endpoint written as "IP:PORT") takes the
            // text; derived structs refuse it, and get the message below.
            Kind::Scalar(_) => match self.text() {
                Some(text) => visitor
                    .visit_str(text)
                    .map_err(|_: Error| self.expected("a mapping")),
                None => Err(self.expected("a mapping")),
            },
            Kind::Seq(_) => Err(self.expected("a mapping")),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.check()?;
        match self.text() {
            Some(text) => visitor
                .visit_enum(UnitVariant { text })
                .map_err(|e: Error| e.at(self.node.pos)),
            None => Err(self.expected(&one_of(variants))),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let text = self.node.key_text();
        visitor
            .visit_str(text)
            .map_err(|e: Error| e.at(self.node.pos))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }
}

struct SeqDe<'a> {
    items: std::slice::Iter<'a, Node>,
    cx: &'a Decoder<'a>,
}

impl<'de> SeqAccess<'de> for SeqDe<'_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        match self.items.next() {
            Some(node) => seed.deserialize(NodeDe { node, cx: self.cx }).map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// A mapping read as a map (names to values).
struct MapDe<'a> {
    entries: std::slice::Iter<'a, (Node, Node)>,
    value: Option<&'a Node>,
    cx: &'a Decoder<'a>,
}

impl<'de> MapAccess<'de> for MapDe<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.entries.next() {
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(NodeDe {
                    node: key,
                    cx: self.cx,
                })
                .map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        match self.value.take() {
            Some(node) => seed.deserialize(NodeDe { node, cx: self.cx }),
            None => Err(de::Error::custom("a value was read before its key")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// A mapping read as a struct: keys that are not fields are reported here and skipped.
struct StructDe<'a> {
    entries: std::slice::Iter<'a, (Node, Node)>,
    value: Option<&'a Node>,
    name: &'static str,
    fields: &'static [&'static str],
    hinted: &'a RefCell<Vec<&'static str>>,
    cx: &'a Decoder<'a>,
}

impl<'de> MapAccess<'de> for StructDe<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        for (key, value) in self.entries.by_ref() {
            let text = key.key_text();
            if self.fields.contains(&text) {
                self.value = Some(value);
                return seed
                    .deserialize(StrDeserializer::<Error>::new(text))
                    .map(Some)
                    .map_err(|e: Error| e.at(key.pos));
            }
            let message = match (self.cx.hint)(self.name, text) {
                Some(hint) => {
                    self.hinted.borrow_mut().extend(hint.stands_for);
                    hint.message
                }
                None => unknown_key(text, self.fields),
            };
            self.cx.sink.error(key.pos, message);
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        match self.value.take() {
            Some(node) => seed.deserialize(NodeDe { node, cx: self.cx }),
            None => Err(de::Error::custom("a value was read before its key")),
        }
    }
}

/// The `Spanned` protocol: the position as numbers, then the value. A value that fails is
/// reported here, at its position, and `Spanned` carries on without it.
struct SpannedDe<'a> {
    de: NodeDe<'a>,
    step: usize,
}

impl<'de> MapAccess<'de> for SpannedDe<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match spanned::FIELDS.get(self.step) {
            Some(field) => seed
                .deserialize(BorrowedStrDeserializer::<Error>::new(field))
                .map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let node = self.de.node;
        let text_pos = self.de.scalar().and_then(|s| s.text_pos);
        let number = match self.step {
            0 => Some(node.pos.file.0),
            1 => Some(node.pos.line),
            2 => Some(node.pos.col),
            3 => Some(text_pos.map_or(0, |p| p.line)),
            4 => Some(text_pos.map_or(0, |p| p.col)),
            _ => None,
        };
        self.step += 1;
        match number {
            Some(n) => seed.deserialize(U32Deserializer::<Error>::new(n)),
            None => seed.deserialize(self.de).map_err(|e| self.de.report(e)),
        }
    }
}

/// An enum written as its variant's name.
struct UnitVariant<'a> {
    text: &'a str,
}

impl<'de, 'a> EnumAccess<'de> for UnitVariant<'a> {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), Error> {
        let value = seed.deserialize(StrDeserializer::<Error>::new(self.text))?;
        Ok((value, self))
    }
}

impl<'de> VariantAccess<'de> for UnitVariant<'_> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _seed: T) -> Result<T::Value, Error> {
        Err(de::Error::custom("expected a plain value"))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, _visitor: V) -> Result<V::Value, Error> {
        Err(de::Error::custom("expected a plain value"))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Error> {
        Err(de::Error::custom("expected a plain value"))
    }
}
