//! `[mapping]`: directory attributes to SCIM attributes.

use serde::Deserialize;

use super::*;

/// A value source as written: one attribute name, a list tried in order (`[]` unmaps the
/// field), or `{ expr = "..." }` / `{ value = "constant" }`.
#[derive(Deserialize, Clone)]
#[serde(
    untagged,
    expecting = "an attribute name, a list of attribute names, { expr = \"...\" } or { value = \"...\" }"
)]
enum Attrs {
    One(String),
    Many(Vec<String>),
    Table(RawExpr),
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawExpr {
    expr: Option<String>,
    value: Option<String>,
}

impl Attrs {
    fn names(&self) -> Vec<String> {
        match self {
            Attrs::One(s) if s.is_empty() => vec![],
            Attrs::One(s) => vec![s.clone()],
            Attrs::Many(v) => v.iter().filter(|s| !s.is_empty()).cloned().collect(),
            Attrs::Table(_) => vec![],
        }
    }

    /// The checked source; an expression's mistakes are reported at their line and column in
    /// the file.
    fn source(self, cx: &Cx, key: &str) -> Result<FieldSource, ConfigError> {
        let table = match self {
            Attrs::Table(t) => t,
            other => return Ok(FieldSource::Attrs(other.names())),
        };
        let text = match (table.expr, table.value) {
            (Some(e), None) => e,
            (None, Some(v)) => {
                return Ok(FieldSource::Expr {
                    text: serde_json::Value::String(v.clone()).to_string(),
                    expr: crate::mapping::expr::Expr::Text(v),
                })
            }
            _ => {
                return Err(cx.invalid(
                    key,
                    "write either { expr = \"...\" } or { value = \"...\" }".into(),
                ))
            }
        };
        match crate::mapping::expr::Expr::parse(&text) {
            Ok(expr) => Ok(FieldSource::Expr { text, expr }),
            Err(e) => Err(cx.error_at(key, &text, e.column, &e.message)),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawActive {
    attribute: Option<String>,
    #[serde(default)]
    inactive_values: Vec<String>,
    #[serde(default)]
    present_means_inactive: bool,
    user_account_control: Option<bool>,
    account_expires: Option<bool>,
}

/// `[mapping]`: every attribute is optional; what is not set comes from the profile.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub(super) struct RawMapping {
    key: Option<String>,
    key_format: Option<KeyFormat>,
    user_name: Option<Attrs>,
    given_name: Option<Attrs>,
    family_name: Option<Attrs>,
    display_name: Option<Attrs>,
    email: Option<Attrs>,
    title: Option<Attrs>,
    department: Option<Attrs>,
    employee_number: Option<Attrs>,
    manager: Option<Attrs>,
    #[serde(default)]
    active: RawActive,
    group_name: Option<Attrs>,
    member_attribute: Option<String>,
    member_of_attribute: Option<String>,
    #[serde(default)]
    custom: std::collections::BTreeMap<String, Attrs>,
    required: Option<Vec<String>>,
}

impl RawMapping {
    pub(super) fn check(
        self,
        cx: &Cx,
        defaults: &ProfileDefaults,
    ) -> Result<MappingConfig, ConfigError> {
        let invalid = |key: &str, reason: String| cx.invalid(key, reason);
        let m = self;
        let names =
            |v: Option<Attrs>, default: &[&str]| v.unwrap_or_else(|| attrs(default)).names();
        let written = std::cell::RefCell::new(Vec::<(String, String)>::new());
        let source = |v: Option<Attrs>, default: &[&str], key: &str| {
            let explicit = v.is_some();
            let s = v.unwrap_or_else(|| attrs(default)).source(cx, key)?;
            if explicit {
                for a in s.attributes() {
                    written.borrow_mut().push((key.to_string(), a));
                }
            }
            Ok::<_, ConfigError>(s)
        };
        let key = m.key.unwrap_or_else(|| defaults.key.to_string());
        if key.trim().is_empty() {
            return Err(invalid(
                "mapping.key",
                "must name the attribute holding a stable id".into(),
            ));
        }
        if key.eq_ignore_ascii_case("dn") || key.eq_ignore_ascii_case("distinguishedName") {
            return Err(invalid(
                "mapping.key",
                "the DN changes on rename and move; use entryUUID, objectGUID or nsUniqueId".into(),
            ));
        }
        let user_name = source(m.user_name, defaults.user_name, "mapping.user_name")?;
        if user_name.is_unmapped() {
            return Err(invalid(
                "mapping.user_name",
                "userName must be mapped".into(),
            ));
        }
        let group_name = source(m.group_name, &["cn"], "mapping.group_name")?;
        if group_name.is_unmapped() {
            return Err(invalid(
                "mapping.group_name",
                "the group name must be mapped".into(),
            ));
        }
        let mut custom = Vec::new();
        for (scim_path, attrs) in m.custom {
            let key = format!("mapping.custom.\"{scim_path}\"");
            check_custom_path(&scim_path).map_err(|r| invalid(&key, r))?;
            let source = attrs.source(cx, &key)?;
            for a in source.attributes() {
                written.borrow_mut().push((key.clone(), a));
            }
            if source.is_unmapped() {
                return Err(invalid(&key, "names no directory attribute".into()));
            }
            custom.push((scim_path, source));
        }
        let required_names = m.required.unwrap_or_else(|| {
            [
                "name.givenName",
                "name.familyName",
                "emails.work",
                "displayName",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        });
        let mut required = Vec::new();
        for name in &required_names {
            let field = match name.as_str() {
                "userName" => continue,
                "name.givenName" => RequiredField::GivenName,
                "name.familyName" => RequiredField::FamilyName,
                "emails.work" | "emails[type eq \"work\"].value" | "email" => RequiredField::Email,
                "displayName" => RequiredField::DisplayName,
                other => {
                    return Err(invalid(
                        "mapping.required",
                        format!(
                        "unknown field `{other}`; use userName, name.givenName, name.familyName, \
                             emails.work or displayName"
                    ),
                    ))
                }
            };
            required.push(field);
        }
        let mapping = MappingConfig {
            key,
            key_format: m.key_format.unwrap_or(defaults.key_format),
            user_name,
            given_name: source(m.given_name, &["givenName"], "mapping.given_name")?,
            family_name: source(m.family_name, &["sn"], "mapping.family_name")?,
            display_name: source(
                m.display_name,
                &["displayName", "cn"],
                "mapping.display_name",
            )?,
            email: source(m.email, &["mail"], "mapping.email")?,
            title: source(m.title, &["title"], "mapping.title")?,
            department: source(m.department, defaults.department, "mapping.department")?,
            employee_number: source(
                m.employee_number,
                defaults.employee_number,
                "mapping.employee_number",
            )?,
            manager: match m.manager {
                Some(Attrs::Table(_)) => {
                    return Err(invalid(
                        "mapping.manager",
                        "holds the manager's DN: name attributes, not an expression".into(),
                    ))
                }
                Some(a) => {
                    let n = a.names();
                    for x in &n {
                        written
                            .borrow_mut()
                            .push(("mapping.manager".into(), x.clone()));
                    }
                    n
                }
                None => names(None, &["manager"]),
            },
            active: ActiveRule {
                attribute: {
                    let a = m.active.attribute.filter(|a| !a.is_empty());
                    if a.is_some()
                        && m.active.inactive_values.is_empty()
                        && !m.active.present_means_inactive
                    {
                        return Err(cx.invalid(
                            "mapping.active.attribute",
                            "is read, but no value of it means disabled: set inactive_values \
                             (e.g. [\"disabled\"]) or present_means_inactive = true"
                                .into(),
                        ));
                    }
                    a
                },
                inactive_values: m.active.inactive_values,
                present_means_inactive: m.active.present_means_inactive,
                user_account_control: m
                    .active
                    .user_account_control
                    .unwrap_or(defaults.user_account_control),
                account_expires: m
                    .active
                    .account_expires
                    .unwrap_or(defaults.user_account_control),
            },
            group_name,
            member_attribute: m.member_attribute.unwrap_or_else(|| "member".into()),
            member_of_attribute: m.member_of_attribute.unwrap_or_else(|| "memberOf".into()),
            custom,
            written: written.into_inner(),
            required,
        };
        Ok(mapping)
    }
}

fn attrs(list: &[&str]) -> Attrs {
    Attrs::Many(list.iter().map(|s| s.to_string()).collect())
}

/// Core SCIM User attributes a custom mapping may not take over: the gateway already owns them
/// (dedicated keys) or the provider does.
const OWNED_PATHS: &[&str] = &[
    "id",
    "externalId",
    "userName",
    "displayName",
    "active",
    "title",
    "meta",
    "schemas",
    "groups",
    "name.givenName",
    "name.familyName",
];

/// A custom mapping's target: any SCIM attribute path (`nickName`, `name.middleName`,
/// `phoneNumbers[type eq "mobile"].value`, `urn:...:User:costCenter`) that no dedicated key maps.
fn check_custom_path(path: &str) -> Result<(), String> {
    let p = crate::target::scim::path::ScimPath::parse(path)?;
    let dedicated = || {
        Err(format!(
            "`{path}` is mapped by a dedicated key, not under custom"
        ))
    };
    match &p.schema {
        Some(schema) if schema.eq_ignore_ascii_case(crate::target::scim::CORE_USER) => {
            return Err(format!(
                "write a core attribute without its schema (`{}`, not `{path}`)",
                p.attr
            ))
        }
        Some(schema) if schema.eq_ignore_ascii_case(crate::target::scim::ENTERPRISE_USER) => {
            if ["department", "employeeNumber", "manager"]
                .iter()
                .any(|a| a.eq_ignore_ascii_case(&p.attr))
            {
                return dedicated();
            }
        }
        Some(_) => {}
        None => {
            let with_sub = match &p.sub {
                Some(s) if p.filter.is_none() => format!("{}.{s}", p.attr),
                _ => p.attr.clone(),
            };
            if OWNED_PATHS
                .iter()
                .any(|o| o.eq_ignore_ascii_case(&p.attr) || o.eq_ignore_ascii_case(&with_sub))
            {
                return dedicated();
            }
            if p.attr.eq_ignore_ascii_case("name") && p.sub.is_none() {
                return dedicated();
            }
            // The work address is `email`; other types of emails may be mapped.
            let work = p.filter.as_ref().is_some_and(|(a, v)| {
                a.eq_ignore_ascii_case("type") && v.eq_ignore_ascii_case("work")
            });
            if p.attr.eq_ignore_ascii_case("emails") && (p.filter.is_none() || work) {
                return dedicated();
            }
        }
    }
    Ok(())
}
