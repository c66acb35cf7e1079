//! Who is calling the admin API, and what they may do.
//!
//! - Users log in with a password checked against its argon2 hash (`[[admin.users]]`, or
//!   `ROWSYNC_ADMIN__PASSWORD` for user `admin`, hashed at start). A login sets a session cookie
//!   (HttpOnly, SameSite=Strict) and returns a CSRF token, which every state-changing request
//!   made with that cookie must send as `X-CSRF-Token`: a page of another site can make a
//!   browser send the cookie, but cannot read the token.
//! - Scripts send `Authorization: Bearer <token>`; tokens are random (256 bits), so a plain
//!   SHA-256 of them is stored, as for any high-entropy secret, and checked in constant time.
//! - Failed logins are throttled per client address: after `MAX_FAILURES` within
//!   `FAILURE_WINDOW`, logins from there are refused until the window ends.
//! - A viewer may read everything and change nothing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Argon2, PasswordVerifier};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::config::{AdminConfig, Role};

/// Failed logins from one address before it must wait.
pub const MAX_FAILURES: u32 = 5;
/// How long failures count, and how long a throttled address waits.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// A session ends after this long without a request.
const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);

/// The session cookie's name.
pub const COOKIE: &str = "rowsync_session";

/// Someone the API knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
    /// The CSRF token of the session the request came with; `None` for a bearer token.
    pub csrf: Option<String>,
}

struct Session {
    caller: Caller,
    last_seen: Instant,
}

/// Users, tokens, sessions and the login throttle.
pub struct Auth {
    users: Vec<(String, Role, String)>,
    tokens: Vec<(String, Role, [u8; 32])>,
    metrics_token: Option<String>,
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    /// Password checks running at once: each takes ~19 MiB and a blocking thread.
    checks: tokio::sync::Semaphore,
}

/// Addresses whose failures are remembered at once; beyond, the oldest are forgotten.
const MAX_TRACKED: usize = 10_000;
/// Password checks at once.
const MAX_CHECKS: usize = 4;

/// Why a login failed.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginError {
    Wrong,
    /// Too many failures from this address; retry after this long.
    Throttled(Duration),
}

/// A new argon2 PHC string for `password`.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let salt = SaltString::encode_b64(&bytes)?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// A new API token and the `sha256:` hash to put in the configuration.
pub fn new_token() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = hex(&bytes);
    let hash = format!("sha256:{}", hex(&Sha256::digest(token.as_bytes())));
    (token, hash)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_id() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex(&bytes)
}

/// Whether two byte strings are equal, in time that depends on their length only.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Auth {
    /// The users and tokens of `config`; `None` when nobody could log in.
    pub fn from_config(config: &AdminConfig) -> Result<Option<Auth>, argon2::password_hash::Error> {
        let mut users: Vec<(String, Role, String)> = config
            .users
            .iter()
            .map(|u| (u.name.clone(), u.role, u.password_hash.clone()))
            .collect();
        if let Some(password) = &config.password {
            users.retain(|(name, _, _)| name != "admin");
            users.push(("admin".into(), Role::Admin, hash_password(password)?));
        }
        let tokens = config
            .tokens
            .iter()
            .filter_map(|t| {
                let hex = t.token_hash.strip_prefix("sha256:")?;
                let mut digest = [0u8; 32];
                for (i, byte) in digest.iter_mut().enumerate() {
                    *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
                }
                Some((t.name.clone(), t.role, digest))
            })
            .collect::<Vec<_>>();
        if users.is_empty() && tokens.is_empty() {
            return Ok(None);
        }
        // Made now, not on the first login with an unknown name (on an async thread).
        dummy_hash();
        Ok(Some(Auth {
            users,
            tokens,
            metrics_token: config.metrics_token.clone(),
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            checks: tokio::sync::Semaphore::new(MAX_CHECKS),
        }))
    }

    /// Users and tokens of nobody: every login and token is refused.
    pub fn nobody() -> Auth {
        Auth {
            users: Vec::new(),
            tokens: Vec::new(),
            metrics_token: None,
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            checks: tokio::sync::Semaphore::new(MAX_CHECKS),
        }
    }

    /// Checks a password; on success returns the new session's id and its caller.
    pub async fn login(
        &self,
        from: IpAddr,
        user: &str,
        password: &str,
    ) -> Result<(String, Caller), LoginError> {
        // Counted as a failure before the check, so parallel guesses cannot outrun the limit;
        // taken back when it succeeds.
        self.attempt(from).map_err(LoginError::Throttled)?;
        let found = self.users.iter().find(|(name, _, _)| name == user).cloned();
        let password = password.to_owned();
        // The hash is checked even for an unknown user, so timing does not tell names apart.
        let (role, hash) = match &found {
            Some((_, role, hash)) => (Some(*role), hash.clone()),
            None => (None, dummy_hash().to_owned()),
        };
        let permit = self.checks.acquire().await;
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|h| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &h)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        drop(permit);
        match (ok, role) {
            (true, Some(role)) => {
                self.succeeded(from);
                let caller = Caller {
                    name: user.to_owned(),
                    role,
                    csrf: Some(random_id()),
                };
                let id = random_id();
                self.lock_sessions().insert(
                    id.clone(),
                    Session {
                        caller: caller.clone(),
                        last_seen: Instant::now(),
                    },
                );
                Ok((id, caller))
            }
            _ => Err(LoginError::Wrong),
        }
    }

    pub fn logout(&self, session: &str) {
        self.lock_sessions().remove(session);
    }

    /// The caller of a session cookie, if it is live.
    pub fn session(&self, id: &str) -> Option<Caller> {
        let mut sessions = self.lock_sessions();
        let now = Instant::now();
        sessions.retain(|_, s| now.duration_since(s.last_seen) < SESSION_IDLE);
        let session = sessions.get_mut(id)?;
        session.last_seen = now;
        Some(session.caller.clone())
    }

    /// The caller of a bearer token, if it is known.
    pub fn token(&self, token: &str) -> Option<Caller> {
        let digest = Sha256::digest(token.as_bytes());
        self.tokens
            .iter()
            .find(|(_, _, hash)| same(hash, &digest))
            .map(|(name, role, _)| Caller {
                name: format!("token:{name}"),
                role: *role,
                csrf: None,
            })
    }

    /// Whether `/metrics` may be read with this bearer token (any, when none is configured).
    pub fn metrics_allowed(&self, bearer: Option<&str>) -> bool {
        match &self.metrics_token {
            None => true,
            Some(wanted) => bearer.is_some_and(|b| same(b.as_bytes(), wanted.as_bytes())),
        }
    }

    /// Counts a login attempt from `from`; `Err(wait)` when it has failed too often.
    fn attempt(&self, from: IpAddr) -> Result<(), Duration> {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
        }
        if failures.len() >= MAX_TRACKED {
            // Still full of fresh failures: forget the oldest.
            if let Some(oldest) = failures
                .iter()
                .min_by_key(|(_, (_, s))| *s)
                .map(|(ip, _)| *ip)
            {
                failures.remove(&oldest);
            }
        }
        let entry = failures.entry(from).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FAILURE_WINDOW {
            *entry = (0, Instant::now());
        }
        if entry.0 >= MAX_FAILURES {
            return Err(FAILURE_WINDOW.saturating_sub(entry.1.elapsed()));
        }
        entry.0 += 1;
        Ok(())
    }

    /// A login from `from` succeeded: its attempt does not count as a failure.
    fn succeeded(&self, from: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = failures.get_mut(&from) {
            entry.0 = entry.0.saturating_sub(1);
        }
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A valid hash of nothing anyone knows, checked for unknown users.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password(&random_id()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AdminToken, AdminUser};

    fn auth() -> (Auth, String) {
        let (token, token_hash) = new_token();
        let config = AdminConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            users: vec![AdminUser {
                name: "ann".into(),
                role: Role::Viewer,
                password_hash: hash_password("s3cret").unwrap(),
            }],
            tokens: vec![AdminToken {
                name: "ci".into(),
                role: Role::Admin,
                token_hash,
            }],
            metrics_token: None,
            password: Some("root-pw".into()),
        };
        (Auth::from_config(&config).unwrap().unwrap(), token)
    }

    #[tokio::test]
    async fn passwords_sessions_tokens_and_the_throttle() {
        let (auth, token) = auth();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let (id, caller) = auth.login(ip, "ann", "s3cret").await.unwrap();
        assert_eq!(caller.role, Role::Viewer);
        assert_eq!(auth.session(&id), Some(caller));
        let (_, admin) = auth.login(ip, "admin", "root-pw").await.unwrap();
        assert_eq!(admin.role, Role::Admin);
        auth.logout(&id);
        assert_eq!(auth.session(&id), None);
        assert_eq!(auth.token(&token).map(|c| c.role), Some(Role::Admin));
        assert_eq!(auth.token("not-it"), None);
        for _ in 0..MAX_FAILURES {
            assert_eq!(
                auth.login(ip, "ann", "wrong").await.unwrap_err(),
                LoginError::Wrong
            );
        }
        // Throttled now, even with the right password; other addresses are not.
        assert!(matches!(
            auth.login(ip, "ann", "s3cret").await,
            Err(LoginError::Throttled(_))
        ));
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(auth.login(other, "ann", "s3cret").await.is_ok());
        assert_eq!(
            auth.login(other, "nobody", "s3cret").await.unwrap_err(),
            LoginError::Wrong
        );
    }

    #[tokio::test]
    async fn parallel_guesses_cannot_outrun_the_throttle() {
        let (auth, _) = auth();
        let auth = std::sync::Arc::new(auth);
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        let guesses = (0..12).map(|i| {
            let auth = auth.clone();
            tokio::spawn(async move { auth.login(ip, "ann", &format!("guess{i}")).await })
        });
        let results = futures_util::future::join_all(guesses).await;
        let checked = results
            .iter()
            .filter(|r| matches!(r, Ok(Err(LoginError::Wrong))))
            .count();
        assert_eq!(checked as u32, MAX_FAILURES, "{results:?}");
    }
}
