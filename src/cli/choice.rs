//! Flags whose values are a library setting's names (`--precision`, `--grad`, ...): clap lists and checks
//! the names, the library parses them (`regionseek::choice`), so the CLI and every other front door agree.

use clap::builder::{PossibleValuesParser, TypedValueParser};
use regionseek::choice::{parse_choice, NamedChoice};

pub fn choice<T: NamedChoice + Clone>() -> impl TypedValueParser<Value = T> {
    PossibleValuesParser::new(T::ALL.iter().map(|v| v.name()))
        .try_map(|name| parse_choice::<T>(&name))
}
