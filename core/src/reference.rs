//! Agent references: `NAME@VERSION` in the built-in registry, or
//! `oci://REGISTRY/REPOSITORY[:TAG][@DIGEST]`. [`agent_name`] gives the
//! name an agent is known by everywhere, which is also its key-value
//! namespace, so the same agent sees the same data under `warden run`,
//! `warden dev` and a node.

use crate::text::{NameError, check_name, escape_controls};

/// Why a reference is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("`{0}` is not NAME@VERSION (e.g. hello@1.0.0)")]
    Shape(String),
    #[error(transparent)]
    Name(#[from] NameError),
}

/// Splits `name@version` and checks both parts against the name character
/// set ([`check_name`]); the error names the problem.
pub fn split_reference(reference: &str) -> Result<(&str, &str), ReferenceError> {
    match reference.split_once('@') {
        Some((name, version)) if !name.is_empty() && !version.is_empty() => {
            check_name("agent name", name)?;
            check_name("version", version)?;
            Ok((name, version))
        }
        _ => Err(ReferenceError::Shape(
            escape_controls(&reference.chars().take(300).collect::<String>()).into_owned(),
        )),
    }
}

/// Splits a recorded or submitted agent reference into its name and its
/// version (tag or digest for OCI):
/// - `hello@1.0.0` → (`hello`, `1.0.0`)
/// - `oci://reg:5000/team/agent:v1` → (`oci://reg:5000/team/agent`, `v1`)
/// - `oci://reg/team/agent@sha256:…` → (`oci://reg/team/agent`, `sha256:…`)
/// - anything else (a file stem) → (itself, ``)
pub fn name_and_version(reference: &str) -> (&str, &str) {
    if let Some(rest) = reference.strip_prefix("oci://") {
        if let Some((repo, digest)) = reference.split_once('@') {
            return (repo, digest);
        }
        let last_slash = rest.rfind('/').unwrap_or(0);
        return match rest[last_slash..].rfind(':') {
            Some(colon) => {
                let at = "oci://".len() + last_slash + colon;
                (&reference[..at], &reference[at + 1..])
            }
            None => (reference, ""),
        };
    }
    reference.split_once('@').unwrap_or((reference, ""))
}

/// The name of the agent `reference` names: its key-value namespace and
/// its name in logs (see [`name_and_version`]).
pub fn agent_name(reference: &str) -> &str {
    name_and_version(reference).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split() {
        assert_eq!(split_reference("hello@1.0").unwrap(), ("hello", "1.0"));
        for bad in ["hello", "@1", "hello@", ""] {
            let e = split_reference(bad).unwrap_err();
            assert!(e.to_string().contains("NAME@VERSION"), "{e}");
        }
        let e = split_reference("evil\u{1b}[2J@1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "agent name `evil\\u{1b}[2J` may hold only ASCII letters, digits, `.`, `_` and `-`"
        );
        assert!(split_reference("hello@1 2").is_err());
    }

    #[test]
    fn one_name_per_agent_whatever_the_version() {
        let table = [
            ("hello@1.0.0", "hello", "1.0.0"),
            ("oci://reg/team/agent:v1", "oci://reg/team/agent", "v1"),
            (
                "oci://reg:5000/team/agent:v1",
                "oci://reg:5000/team/agent",
                "v1",
            ),
            ("oci://reg:5000/team/agent", "oci://reg:5000/team/agent", ""),
            (
                "oci://reg:5000/team/agent@sha256:ab",
                "oci://reg:5000/team/agent",
                "sha256:ab",
            ),
            ("kv-counter", "kv-counter", ""),
        ];
        for (reference, name, version) in table {
            assert_eq!(name_and_version(reference), (name, version), "{reference}");
        }
        // A tag and the digest it resolved to name the same agent.
        assert_eq!(
            agent_name("oci://reg/a:latest"),
            agent_name("oci://reg/a@sha256:00")
        );
    }
}
