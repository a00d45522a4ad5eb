//! Identifier newtypes, so a user id can never be passed where a directory id is expected.

use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// A fresh UUIDv7: time-ordered, so ordering by id is creation order.
            pub fn generate() -> Self {
                $name(uuid::Uuid::now_v7().to_string())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A directory (tenant).
    DirectoryId
);
id_type!(
    /// A SCIM User resource.
    UserId
);
id_type!(
    /// A directory bearer key.
    KeyId
);
id_type!(
    /// A SCIM Group resource.
    GroupId
);
id_type!(
    /// An admin API token.
    AdminTokenId
);
id_type!(
    /// One audit log entry.
    AuditId
);
