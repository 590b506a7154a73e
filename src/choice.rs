//! Settings with a fixed set of named values (precision, gradient path, baseline, ...): parsed from and
//! printed as their names, so that every front door (CLI flags, pipeline specs, Python keywords, HTTP
//! parameters) accepts the same words without the library knowing any of them.

/// A setting whose values are a fixed list of names.
pub trait NamedChoice: Copy + PartialEq + Send + Sync + 'static {
    /// Every value, in the order a listing shows them.
    const ALL: &'static [Self];
    /// What the setting is called in messages ("precision", "gradient path").
    const WHAT: &'static str;

    fn name(self) -> &'static str;

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.name() == name)
    }

    /// The names, comma-separated, for an error message.
    fn names() -> String {
        Self::ALL
            .iter()
            .map(|v| v.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A name that is none of a setting's values.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown {what} `{given}` (one of: {names})")]
pub struct UnknownChoice {
    pub what: &'static str,
    pub given: String,
    pub names: String,
}

/// Parses a setting's value by its name, with an error that lists the names.
pub fn parse_choice<T: NamedChoice>(name: &str) -> Result<T, UnknownChoice> {
    T::from_name(name).ok_or_else(|| UnknownChoice {
        what: T::WHAT,
        given: name.to_string(),
        names: T::names(),
    })
}

/// Implements [`NamedChoice`], `FromStr` and `Display` for an enum from its variants' names.
macro_rules! named_choice {
    ($ty:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $crate::choice::NamedChoice for $ty {
            const ALL: &'static [Self] = &[$($ty::$variant),+];
            const WHAT: &'static str = $what;
            fn name(self) -> &'static str {
                $ty::name(self)
            }
        }

        impl $ty {
            /// The value's name, as flags, specs and reports spell it.
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl std::str::FromStr for $ty {
            type Err = $crate::choice::UnknownChoice;
            fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
                $crate::choice::parse_choice(s)
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str($crate::choice::NamedChoice::name(*self))
            }
        }
    };
}
pub(crate) use named_choice;

#[cfg(test)]
mod tests {
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Speed {
        Slow,
        VeryFast,
    }
    named_choice!(Speed, "speed", { Slow => "slow", VeryFast => "very-fast" });

    #[test]
    fn a_choice_reads_its_names_and_refuses_others_listing_them() {
        assert_eq!("very-fast".parse::<Speed>().unwrap(), Speed::VeryFast);
        assert_eq!(Speed::Slow.to_string(), "slow");
        let e = "fast".parse::<Speed>().unwrap_err().to_string();
        assert_eq!(e, "unknown speed `fast` (one of: slow, very-fast)");
    }
}
