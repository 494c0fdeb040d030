//! OpenAPI schemas of what the lenient readers (`lenient.rs`) accept, for
//! `#[schema(schema_with = ...)]` on request DTOs: the published document describes the input we
//! really take (Jackson-style coercions included), so a client generated from it is never refused
//! for a value we would have read, and a fuzzer is never told a value we read is invalid.

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    AdditionalProperties, AnyOfBuilder, ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type,
};

/// JSON `null`, which every lenient reader takes as "absent".
fn null() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::Null)
}

fn scalar(kind: Type) -> ObjectBuilder {
    ObjectBuilder::new().schema_type(kind)
}

/// Whitespace `str::trim` drops (ASCII only: what a fuzzer and a client both agree on).
const WS: &str = "[ \\t\\n\\x0b\\x0c\\r]*";

/// An integer in `[min, max]` as `lenient_int` reads it: a number (a fraction is truncated toward
/// zero), or a string of decimal digits; or null (absent). The digit strings described are those
/// surely in range: `max_digits` digits at most, no zero when `min` is 1.
pub fn int(min: i64, max: i64, max_digits: usize, description: &str) -> Schema {
    int_forms(min, max, max_digits)
        .item(null())
        .description(Some(description))
        .build()
        .into()
}

/// As [`int`], but null is refused (a required value).
pub fn required_int(min: i64, max: i64, max_digits: usize, description: &str) -> Schema {
    int_forms(min, max, max_digits)
        .description(Some(description))
        .build()
        .into()
}

fn int_forms(min: i64, max: i64, max_digits: usize) -> AnyOfBuilder {
    use utoipa::Number::{Int, UInt};
    // Bounds as JSON integers (a float bound near 2^63 would round past the i64 range).
    // Truncation toward zero: 0.9 reads as 0, so a positive minimum is inclusive and a bound at
    // or below zero admits the fractions just beyond it. At the ends of the i64 range the floats
    // stop short of ±2^63 (`lenient_int`'s range) and the integers reach i64::MIN / i64::MAX.
    let mut number = ObjectBuilder::new().schema_type(Type::Number);
    number = if min > 0 {
        number.minimum(Some(Int(min as isize)))
    } else if min == i64::MIN {
        number.exclusive_minimum(Some(Int(isize::MIN)))
    } else {
        number.exclusive_minimum(Some(Int(min as isize - 1)))
    };
    number = if max == i64::MAX {
        number.exclusive_maximum(Some(UInt(1usize << 63)))
    } else {
        number.exclusive_maximum(Some(Int(max as isize + 1)))
    };
    let mut forms = AnyOfBuilder::new().item(number);
    if min == i64::MIN {
        forms = forms.item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(Int(isize::MIN)))
                .maximum(Some(Int(max as isize))),
        );
    }
    let digits = match min {
        m if m > 0 => format!("\\+?0*[1-9][0-9]{{0,{}}}", max_digits - 1),
        0 => format!("\\+?[0-9]{{1,{max_digits}}}"),
        _ => format!("[+-]?[0-9]{{1,{max_digits}}}"),
    };
    forms.item(scalar(Type::String).pattern(Some(format!("^{WS}{digits}{WS}$"))))
}

/// A positive ISO-8601 duration as `parse_iso_duration` reads it (`PT5S`, `PT0.5S`, `P1DT2H`, any
/// case); or null.
pub fn iso_duration(description: &str) -> Schema {
    let time = "(?=[0-9])([0-9]{1,4}[Hh])?([0-9]{1,4}[Mm])?([0-9]{1,6}([.,][0-9]{1,9})?[Ss])?";
    AnyOfBuilder::new()
        .item(scalar(Type::String).pattern(Some(format!(
            "^(?=[^1-9]*[1-9]){WS}[Pp]([0-9]{{1,4}}[Dd]([Tt]{time})?|[Tt]{time}){WS}$"
        ))))
        .item(null())
        .description(Some(description))
        .build()
        .into()
}

/// A number as `lenient_float` reads it: a number or a numeric string; or null.
pub fn float(description: &str) -> Schema {
    AnyOfBuilder::new()
        .item(scalar(Type::Number))
        .item(scalar(Type::String).pattern(Some(format!(
            "^{WS}[+-]?[0-9]{{1,15}}(\\.[0-9]{{1,15}})?{WS}$"
        ))))
        .item(null())
        .description(Some(description))
        .build()
        .into()
}

/// A boolean as `lenient_bool` reads it: `true`/`false` or the same as a string (any case); or null.
pub fn boolean(description: &str) -> Schema {
    AnyOfBuilder::new()
        .item(scalar(Type::Boolean))
        .item(scalar(Type::String).pattern(Some(format!(
            "^{WS}([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]){WS}$"
        ))))
        .item(null())
        .description(Some(description))
        .build()
        .into()
}

/// The scalars `lenient_string` turns into text: a string, a number or a boolean.
fn text_scalars(builder: AnyOfBuilder) -> AnyOfBuilder {
    builder
        .item(scalar(Type::String))
        .item(scalar(Type::Number))
        .item(scalar(Type::Boolean))
}

/// A string as `lenient_string` reads it (a number or boolean becomes its text); or null.
pub fn string(description: &str) -> Schema {
    text_scalars(AnyOfBuilder::new())
        .item(null())
        .description(Some(description))
        .build()
        .into()
}

/// A list of strings as `lenient_string_list` reads it: scalar items become text, null items are
/// dropped; or null.
pub fn string_list(description: &str) -> Schema {
    let item = text_scalars(AnyOfBuilder::new()).item(null()).build();
    AnyOfBuilder::new()
        .item(ArrayBuilder::new().items(RefOr::T(Schema::AnyOf(item))))
        .item(null())
        .description(Some(description))
        .build()
        .into()
}

/// A string → string map as `lenient_string_map` reads it: scalar values become text, a null
/// value is dropped; or null.
pub fn string_map(description: &str) -> Schema {
    let value = text_scalars(AnyOfBuilder::new()).item(null()).build();
    AnyOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .additional_properties(Some(AdditionalProperties::RefOr(
                    Schema::AnyOf(value).into(),
                ))),
        )
        .item(null())
        .description(Some(description))
        .build()
        .into()
}

/// Any JSON value (function input and output are passed through untouched).
pub fn any_json(description: &str) -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(SchemaType::AnyValue)
            .description(Some(description))
            .build(),
    )
}
