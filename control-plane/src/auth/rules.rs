//! Who may call what: one rule per gRPC method, read by the authorization
//! layer ([`super::layer`]) before any handler runs. A method missing here
//! is refused to everyone, and a test checks that every method of the
//! protocol's descriptor has a rule.

use warden_core::Role;

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Anyone: the request carries its own proof (a join token).
    Public,
    /// An enrolled node, by its certificate.
    Node,
    /// A client whose token has at least this role; the words say what
    /// the method does, for the denial ("reading the audit log needs
    /// admin").
    Client(Role, &'static str),
    /// A node, or a client as in [`Rule::Client`]: registry reads serve
    /// both.
    NodeOrClient(Role, &'static str),
}

/// The rule for the gRPC method at `path` (`/warden.v1.RunService/Submit`),
/// or `None` for a method that does not exist.
pub fn rule(path: &str) -> Option<Rule> {
    use Role::*;
    use Rule::*;
    let (service, method) = path.strip_prefix("/warden.v1.")?.split_once('/')?;
    Some(match (service, method) {
        ("NodeService", "Enroll") => Public,
        ("NodeService", "Register" | "Heartbeat" | "Deregister") => Node,
        ("NodeService", "CreateJoinToken") => Client(System, "making join tokens"),
        ("NodeService", "ListJoinTokens") => Client(System, "listing join tokens"),
        ("NodeService", "RevokeJoinToken") => Client(System, "revoking join tokens"),
        ("NodeService", "RevokeNode") => Client(System, "revoking nodes"),
        ("NodeService", "ListNodes") => Client(System, "listing nodes"),

        ("LeaseService", "Pull" | "Ack" | "Renew" | "Complete" | "Fail" | "Report") => Node,
        ("LeaseService", "AppendLogs") => Node,

        ("RunService", "Submit" | "SubmitBatch") => Client(Submitter, "submitting runs"),
        ("RunService", "Cancel") => Client(Submitter, "cancelling runs"),
        ("RunService", "Get" | "List" | "Watch") => Client(Viewer, "reading runs"),
        ("RunService", "Logs") => Client(Viewer, "reading run logs"),
        ("RunService", "Usage") => Client(Viewer, "reading usage"),

        ("RegistryService", "Publish") => Client(Publisher, "publishing agents"),
        // It compiles what it is given: as costly as a publish.
        ("RegistryService", "Validate") => Client(Publisher, "validating agents"),
        // Importing from an OCI registry needs submitter; the handler
        // checks that, as only the request says which it is.
        ("RegistryService", "Resolve" | "Fetch") => NodeOrClient(Viewer, "reading agents"),
        ("RegistryService", "List") => Client(Viewer, "reading agents"),

        ("AuthService", "WhoAmI") => Client(Viewer, "asking who you are"),
        ("AuthService", "GetQuotas") => Client(Viewer, "reading quotas"),
        ("AuthService", "SetQuotas") => Client(System, "setting tenants' quotas"),
        ("AuthService", "SetConcurrencyLimit") => Client(Admin, "setting concurrency limits"),
        ("AuthService", "ListAudit") => Client(Admin, "reading the audit log"),
        ("AuthService", "CreateToken" | "ListTokens" | "RevokeToken") => {
            Client(Admin, "managing tokens")
        }
        // Where webhooks may go opens the control plane's own network to
        // a tenant: the operator's to say.
        ("AuthService", "SetWebhookConfig") => {
            Client(System, "setting where tenants' webhooks may go")
        }
        ("AuthService", "GetWebhookConfig") => Client(Admin, "reading webhook settings"),
        ("AuthService", "RotateWebhookKey") => Client(Admin, "rotating webhook keys"),
        (
            "AuthService",
            "SetRegistryCredential" | "ListRegistryCredentials" | "DeleteRegistryCredential",
        ) => Client(Admin, "managing registry credentials"),
        _ => return None,
    })
}

/// `Service.Method` of a path (`RunService.Submit`), for the audit log and
/// messages; anything else as it came, control characters escaped.
pub fn method_name(path: &str) -> String {
    match path
        .strip_prefix("/warden.v1.")
        .and_then(|p| p.split_once('/'))
    {
        Some((service, method)) => format!("{service}.{method}"),
        None => warden_core::escape_controls(path).into_owned(),
    }
}
