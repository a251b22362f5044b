//! Policy shapes that have two spellings: camelCase on the wire (PROTOCOL.md sections 5 and 7)
//! and snake_case in TOML files (a `stockade run` policy file's `[env]`, the config file's
//! `[limits]`). [`two_spellings!`] declares the fields once and derives both structs from that
//! one list, so the two spellings cannot drift apart: same fields, same types, same defaults
//! (absent or `null`: the default, applied by the model that consumes the shape), unknown keys
//! refused in both.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Declares a wire struct (written out as a normal struct, its attributes as given, normally
/// `rename_all = "camelCase"`) and, after `file struct Name;`, the same fields as a snake_case
/// struct for TOML files, with `From<file>` for the wire struct.
macro_rules! two_spellings {
    (
        $(#[$wire_attr:meta])*
        pub struct $wire:ident {
            $(
                $(#[$field_attr:meta])*
                pub $field:ident: $ty:ty,
            )*
        }
        $(#[$file_attr:meta])*
        file struct $file:ident;
    ) => {
        $(#[$wire_attr])*
        pub struct $wire {
            $(
                $(#[$field_attr])*
                pub $field: $ty,
            )*
        }

        $(#[$file_attr])*
        #[serde(rename_all = "snake_case", deny_unknown_fields)]
        pub struct $file {
            $(
                $(#[$field_attr])*
                pub $field: $ty,
            )*
        }

        impl From<$file> for $wire {
            fn from(file: $file) -> $wire {
                $wire {
                    $($field: file.$field,)*
                }
            }
        }
    };
}

pub(crate) use two_spellings;

/// The start set of an environment policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Inherit {
    /// Every server variable (the default).
    #[default]
    All,
    /// `PATH`, `SHELL`, `TMPDIR`, `TEMP`, `TMP`, `HOME`, `LANG`, `LC_ALL`, `LC_CTYPE`,
    /// `LOGNAME`, `USER`.
    Core,
    /// Nothing.
    None,
}

two_spellings! {
    /// `envPolicy` (PROTOCOL.md section 5). Patterns match whole names, case-insensitively, with
    /// `*` and `?`.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct EnvPolicyShape {
        /// The start set (default `all`).
        #[serde(default)]
        pub inherit: Option<Inherit>,
        /// Skip the default excludes `*KEY*`, `*SECRET*`, `*TOKEN*` (default false).
        #[serde(default)]
        pub ignore_default_excludes: Option<bool>,
        /// Names to remove.
        #[serde(default)]
        pub exclude: Option<Vec<String>>,
        /// [stockade] Server variables to add back after the excludes.
        #[serde(default)]
        pub include: Option<Vec<String>>,
        /// Variables to set.
        #[serde(default)]
        pub set: Option<BTreeMap<String, String>>,
        /// When non-empty, keep only matching names.
        #[serde(default)]
        pub include_only: Option<Vec<String>>,
    }
    /// The `[env]` table of a `stockade run` policy file: `envPolicy` in snake_case.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
    file struct EnvPolicyFileShape;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_have_the_same_fields() {
        let wire: EnvPolicyShape = serde_json::from_value(serde_json::json!({
            "inherit": "core", "ignoreDefaultExcludes": true, "exclude": ["A*"],
            "set": {"B": "1"}, "includeOnly": ["PATH"], "include": ["C"]
        }))
        .unwrap();
        let file: EnvPolicyFileShape = toml::from_str(
            "inherit = \"core\"\nignore_default_excludes = true\nexclude = [\"A*\"]\n\
             set = { B = \"1\" }\ninclude_only = [\"PATH\"]\ninclude = [\"C\"]\n",
        )
        .unwrap();
        assert_eq!(EnvPolicyShape::from(file), wire);
        // Each spelling refuses the other's.
        assert!(toml::from_str::<EnvPolicyFileShape>("includeOnly = []").is_err());
        assert!(
            serde_json::from_value::<EnvPolicyShape>(serde_json::json!({"include_only": []}))
                .is_err()
        );
    }
}
