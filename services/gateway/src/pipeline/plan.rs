//! Rate-limit planning: which buckets a request is counted in, as a pure function of the route,
//! the caller and the configured limits ([`plan`]). The limiter is called once with the plan
//! ([`super::limit`]); nothing here talks to it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use infergate_config::{ConcurrencySettings, RoleBudgets, RouteBudget, TokenSettings};
use infergate_keystore::KeyRecord;
use infergate_policy::{Role, Route};
use infergate_ratelimit::{BucketKey, LimitCheck, RateSpec, Subject};
use smallvec::SmallVec;

/// The configured limits, resolved once at startup (templates checked against the route table).
#[derive(Debug, Clone)]
pub struct LimitRules {
    pub enabled: bool,
    /// Per client IP, for anonymous callers (and the failed-auth budget).
    pub default: RateSpec,
    /// Per key, for admin keys without a limit of their own.
    pub admin: RateSpec,
    /// Per key, for user and readonly keys without a limit of their own.
    pub authenticated: RateSpec,
    /// Route template → its endpoint limit, counted per caller (IP or key).
    pub endpoints: HashMap<Arc<str>, RateSpec>,
    /// Templates whose anonymous calls skip the IP default (health checks).
    pub exempt_from_default: Vec<Arc<str>>,
    /// Token budgets and concurrency caps of keys without their own, per role.
    pub budgets: RoleBudgets,
    pub tokens: TokenSettings,
    pub concurrency: ConcurrencySettings,
    /// Metered operation (`chat_completions`, …) → the per-key budget on that route
    /// (`rate_limit.tokens.routes`, resolved from its paths once).
    pub route_budgets: HashMap<&'static str, RouteBudget>,
}

/// `rate_limit.tokens.routes` keyed by metered operation instead of path.
pub fn route_budgets(tokens: &TokenSettings) -> HashMap<&'static str, RouteBudget> {
    infergate_config::METERED_PATHS
        .iter()
        .zip(crate::metrics::METERED_ROUTES)
        .filter_map(|(path, op)| tokens.routes.get(*path).map(|b| (*op, *b)))
        .collect()
}

/// One key's token budgets and concurrency cap: its own, else its role's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget {
    pub tokens_per_minute: Option<u64>,
    pub tokens_per_day: Option<u64>,
    pub max_concurrent: Option<u64>,
}

impl Budget {
    pub fn is_empty(&self) -> bool {
        self.tokens_per_minute.is_none()
            && self.tokens_per_day.is_none()
            && self.max_concurrent.is_none()
    }

    pub fn limits_tokens(&self) -> bool {
        self.tokens_per_minute.is_some() || self.tokens_per_day.is_some()
    }
}

impl LimitRules {
    /// Whether a key's call of `route` must be decided with its body: the key has a budget, or
    /// the route a per-key token budget.
    pub fn budgets_route(&self, record: &KeyRecord, route: &Route) -> bool {
        self.enabled
            && (!self.budget(record).is_empty()
                || route
                    .schema
                    .metered()
                    .is_some_and(|op| self.route_budgets.contains_key(op)))
    }
}

impl LimitRules {
    /// A key's token budgets and concurrency cap, each its own else its role's. Empty with
    /// limits off.
    pub fn budget(&self, record: &KeyRecord) -> Budget {
        if !self.enabled {
            return Budget::default();
        }
        let role = match record.role {
            Role::Admin => &self.budgets.admin,
            Role::User => &self.budgets.user,
            Role::Readonly => &self.budgets.readonly,
        };
        Budget {
            tokens_per_minute: record.tokens_per_minute.or(role.tokens_per_minute),
            tokens_per_day: record.tokens_per_day.or(role.tokens_per_day),
            max_concurrent: record.max_concurrent.or(role.max_concurrent),
        }
    }

    /// A key's own limit, else its role's.
    pub fn key_limit(&self, record: &KeyRecord) -> RateSpec {
        record.rate_limit.unwrap_or(match record.role {
            Role::Admin => self.admin,
            Role::User | Role::Readonly => self.authenticated,
        })
    }
}

/// Who is calling what, as far as the limits care.
#[derive(Debug, Clone, Copy)]
pub enum Caller<'a> {
    /// No route matched the path (or not with this method), or the credential was refused: the
    /// IP's default budget pays, so scanning and guessing are limited too.
    Refused,
    /// A route that needs no credential (public, or auth switched off).
    Anonymous { route: &'a Route },
    /// An authenticated key. `ip_guard`: the IP's failed-auth budget is still to be checked (a
    /// key the verifier cache knew skipped that peek). `authorised: false` charges only the
    /// key's own bucket: probing forbidden routes costs the key, but no endpoint budget.
    Key {
        route: &'a Route,
        record: &'a KeyRecord,
        ip_guard: bool,
        authorised: bool,
    },
}

/// The buckets to count one request in.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Checked first, and only checked (not counted): the IP's failed-auth budget, refusing the
    /// request when spent ([`infergate_ratelimit::RateLimiter::check_guarded`]).
    pub guard: Option<LimitCheck>,
    /// Counted together: all or none (at most two: a caller bucket and an endpoint bucket).
    pub checks: SmallVec<[LimitCheck; 2]>,
    /// A limiter outage lets the request through instead of failing it (exempt health routes:
    /// a liveness probe failing on a Redis outage would restart every replica at once).
    pub tolerate_unavailable: bool,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.guard.is_none() && self.checks.is_empty()
    }
}

/// The buckets `caller`, from `ip`, is counted in under `rules`.
pub fn plan(caller: Caller<'_>, ip: IpAddr, rules: &LimitRules) -> Plan {
    let mut plan = Plan::default();
    if !rules.enabled {
        return plan;
    }
    let ip_default = || LimitCheck::new(BucketKey::ip(ip), rules.default);
    let endpoint = |route: &Route, subject: Subject| {
        rules.endpoints.get(&route.template).map(|spec| {
            LimitCheck::new(BucketKey::endpoint(route.template.clone(), subject), *spec)
        })
    };
    match caller {
        Caller::Refused => plan.checks.push(ip_default()),
        Caller::Anonymous { route } => {
            let exempt = rules.exempt_from_default.contains(&route.template);
            if !exempt {
                plan.checks.push(ip_default());
            }
            plan.checks.extend(endpoint(route, Subject::Ip(ip)));
            plan.tolerate_unavailable = exempt;
        }
        Caller::Key {
            route,
            record,
            ip_guard,
            authorised,
        } => {
            plan.guard = ip_guard.then(ip_default);
            plan.checks.push(LimitCheck::new(
                BucketKey::key(record.id.clone()),
                rules.key_limit(record),
            ));
            if authorised {
                plan.checks
                    .extend(endpoint(route, Subject::Key(record.id.clone())));
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use infergate_policy::RouteTable;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 7));

    fn spec(n: u64) -> RateSpec {
        RateSpec::new(n, std::time::Duration::from_secs(60)).unwrap()
    }

    fn rules(table: &RouteTable) -> LimitRules {
        let t = |name: &str| table.find_template(name).unwrap().template.clone();
        LimitRules {
            enabled: true,
            default: spec(10),
            admin: spec(1000),
            authenticated: spec(100),
            endpoints: HashMap::from([(t("/health"), spec(5)), (t("/v1/*"), spec(50))]),
            exempt_from_default: vec![t("/health"), t("/health/ready")],
            budgets: RoleBudgets::default(),
            tokens: infergate_config::GatewayConfig::defaults()
                .rate_limit
                .tokens,
            concurrency: infergate_config::GatewayConfig::defaults()
                .rate_limit
                .concurrency,
            route_budgets: HashMap::new(),
        }
    }

    fn route<'a>(table: &'a RouteTable, template: &str) -> &'a Route {
        table.find_template(template).unwrap()
    }

    fn ip_default(r: &LimitRules) -> LimitCheck {
        LimitCheck::new(BucketKey::ip(IP), r.default)
    }

    fn key(role: Role, own: Option<RateSpec>) -> KeyRecord {
        let mut k = KeyRecord::new("k1", "name", role, "test");
        k.rate_limit = own;
        k
    }

    fn checks(list: Vec<LimitCheck>) -> SmallVec<[LimitCheck; 2]> {
        list.into_iter().collect()
    }

    #[test]
    fn nothing_is_counted_with_limits_off() {
        let table = RouteTable::gateway();
        let r = LimitRules {
            enabled: false,
            ..rules(&table)
        };
        let k = key(Role::User, None);
        for caller in [
            Caller::Refused,
            Caller::Anonymous {
                route: route(&table, "/metrics"),
            },
            Caller::Key {
                route: route(&table, "/v1/*"),
                record: &k,
                ip_guard: true,
                authorised: true,
            },
        ] {
            assert!(plan(caller, IP, &r).is_empty(), "{caller:?}");
        }
    }

    #[test]
    fn refused_callers_pay_the_ip_default() {
        let table = RouteTable::gateway();
        let r = rules(&table);
        assert_eq!(
            plan(Caller::Refused, IP, &r),
            Plan {
                checks: checks(vec![ip_default(&r)]),
                ..Plan::default()
            }
        );
    }

    #[test]
    fn anonymous_callers_every_combination_of_exempt_and_endpoint() {
        let table = RouteTable::gateway();
        let r = rules(&table);
        let anon = |t| Caller::Anonymous {
            route: route(&table, t),
        };
        let ep = |t: &str, n| {
            LimitCheck::new(
                BucketKey::endpoint(route(&table, t).template.clone(), Subject::Ip(IP)),
                spec(n),
            )
        };
        // Exempt, no endpoint limit: nothing counted.
        assert_eq!(
            plan(anon("/health/ready"), IP, &r),
            Plan {
                tolerate_unavailable: true,
                ..Plan::default()
            }
        );
        // Exempt with an endpoint limit: only that, and an outage does not fail the probe.
        assert_eq!(
            plan(anon("/health"), IP, &r),
            Plan {
                checks: checks(vec![ep("/health", 5)]),
                tolerate_unavailable: true,
                ..Plan::default()
            }
        );
        // Not exempt, no endpoint limit: the IP default.
        assert_eq!(
            plan(anon("/openapi.json"), IP, &r),
            Plan {
                checks: checks(vec![ip_default(&r)]),
                ..Plan::default()
            }
        );
        // Not exempt with an endpoint limit (a public /v1/*): both, per IP.
        assert_eq!(
            plan(anon("/v1/*"), IP, &r),
            Plan {
                checks: checks(vec![ip_default(&r), ep("/v1/*", 50)]),
                ..Plan::default()
            }
        );
    }

    #[test]
    fn keys_every_combination_of_guard_authorisation_endpoint_and_limit() {
        let table = RouteTable::gateway();
        let r = rules(&table);
        let own = spec(7);
        for (role, own_limit, expected) in [
            (Role::Admin, None, r.admin),
            (Role::User, None, r.authenticated),
            (Role::Readonly, None, r.authenticated),
            (Role::User, Some(own), own),
            (Role::Admin, Some(own), own),
        ] {
            let k = key(role, own_limit);
            let key_check = LimitCheck::new(BucketKey::key(k.id.clone()), expected);
            let v1_ep = LimitCheck::new(
                BucketKey::endpoint(
                    route(&table, "/v1/*").template.clone(),
                    Subject::Key(k.id.clone()),
                ),
                spec(50),
            );
            for ip_guard in [false, true] {
                let guard = ip_guard.then(|| ip_default(&r));
                for (template, authorised, want) in [
                    ("/models", true, vec![key_check.clone()]),
                    ("/models", false, vec![key_check.clone()]),
                    ("/v1/*", true, vec![key_check.clone(), v1_ep.clone()]),
                    // Refused by authorisation: the key pays, the endpoint budget does not.
                    ("/v1/*", false, vec![key_check.clone()]),
                ] {
                    let caller = Caller::Key {
                        route: route(&table, template),
                        record: &k,
                        ip_guard,
                        authorised,
                    };
                    assert_eq!(
                        plan(caller, IP, &r),
                        Plan {
                            guard: guard.clone(),
                            checks: checks(want),
                            tolerate_unavailable: false,
                        },
                        "{caller:?}"
                    );
                }
            }
        }
    }
}
