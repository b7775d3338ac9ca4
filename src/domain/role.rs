use std::fmt;
use std::str::FromStr;

use super::Invalid;

/// A member's role in a space. Ordered by power: `Viewer < Editor < Owner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Viewer,
    Editor,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "VIEWER",
            Role::Editor => "EDITOR",
            Role::Owner => "OWNER",
        }
    }

    /// May create and modify files.
    pub fn can_write(self) -> bool {
        self >= Role::Editor
    }
}

impl FromStr for Role {
    type Err = Invalid;

    fn from_str(s: &str) -> Result<Self, Invalid> {
        match s {
            "VIEWER" => Ok(Role::Viewer),
            "EDITOR" => Ok(Role::Editor),
            "OWNER" => Ok(Role::Owner),
            other => Err(Invalid(format!("unknown role {other:?}"))),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
