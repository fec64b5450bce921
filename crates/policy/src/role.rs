//! Roles a key can carry.

use std::fmt;
use std::str::FromStr;

/// A key's role. Ordered from most to least privileged only for display; permissions come from
/// [`crate::Permissions`], never from the ordering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    User,
    Readonly,
}

/// The accepted role names, for error messages.
pub const ROLES_ACCEPTED: &str = "admin, user or readonly";

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::User, Role::Readonly];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
            Role::Readonly => "readonly",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Role::Admin => 0,
            Role::User => 1,
            Role::Readonly => 2,
        }
    }
}

impl fmt::Display for Role {
    /// Honours width and alignment (`{:<10}`), so tables line up.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?} (accepted: {ROLES_ACCEPTED})")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "admin" => Ok(Role::Admin),
            "user" => Ok(Role::User),
            // The FastAPI setups spelled it both ways.
            "readonly" | "read-only" | "read_only" => Ok(Role::Readonly),
            _ => Err(UnknownRole(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_pads_to_the_width_asked_for() {
        assert_eq!(format!("{:<9}|", Role::User), "user     |");
        assert_eq!(format!("{:>9}|", Role::Admin), "    admin|");
        assert_eq!(Role::Readonly.to_string(), "readonly");
    }

    #[test]
    fn parses_known_roles_case_insensitively() {
        assert_eq!("Admin".parse::<Role>(), Ok(Role::Admin));
        assert_eq!(" user ".parse::<Role>(), Ok(Role::User));
        assert_eq!("read-only".parse::<Role>(), Ok(Role::Readonly));
        assert!("superuser".parse::<Role>().is_err());
    }
}
