//! Rules of the design that the compiler does not check, read from `cargo metadata`: a service
//! crate never links another service crate, in any kind of dependency (normal, dev, build). What
//! two services share lives in a library crate; tests that need several services live here.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

/// The service crates. A crate laid out as a service (`src/main.rs` and `src/startup.rs`) must be
/// listed here, so a new service is held to the rules as soon as it exists.
const SERVICES: [&str; 6] = [
    "auth",
    "accounts",
    "transfers",
    "mailer",
    "edge-gateway",
    "webhooks",
];

/// One workspace member and what its Cargo.toml depends on.
struct Package {
    name: String,
    /// The folder of its Cargo.toml.
    dir: PathBuf,
    dependencies: Vec<Dependency>,
}

struct Dependency {
    /// The package depended on.
    name: String,
    /// Its key in the Cargo.toml: the name, or the rename when it has `package = ...`.
    key: String,
    /// `normal`, `dev` or `build`.
    kind: String,
    /// The folder of a path dependency (`path = ...` or a workspace one that has a path).
    path: Option<PathBuf>,
}

impl Package {
    fn is_service(&self) -> bool {
        SERVICES.contains(&self.name.as_str())
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root exists")
}

/// The workspace members, from `cargo metadata --no-deps` (the manifests only: no resolution, no
/// network, no lock on the build directory).
fn members() -> Vec<Package> {
    let manifest = workspace_root().join("Cargo.toml");
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let text = |v: &Value| v.as_str().expect("a string in cargo metadata").to_owned();
    metadata["packages"]
        .as_array()
        .expect("cargo metadata lists packages")
        .iter()
        .map(|p| Package {
            name: text(&p["name"]),
            dir: Path::new(&text(&p["manifest_path"]))
                .parent()
                .expect("a manifest is in a folder")
                .to_owned(),
            dependencies: p["dependencies"]
                .as_array()
                .expect("a package lists its dependencies")
                .iter()
                .map(|d| Dependency {
                    name: text(&d["name"]),
                    key: d["rename"]
                        .as_str()
                        .map_or_else(|| text(&d["name"]), str::to_owned),
                    kind: d["kind"].as_str().unwrap_or("normal").to_owned(),
                    path: d["path"].as_str().map(PathBuf::from),
                })
                .collect(),
        })
        .collect()
}

/// `crates/auth` rather than the absolute path, in messages.
fn relative(dir: &Path) -> String {
    let root = workspace_root();
    dir.strip_prefix(&root).unwrap_or(dir).display().to_string()
}

#[test]
fn no_service_crate_depends_on_another_service_crate() {
    let members = members();
    let mut edges = Vec::new();
    for package in members.iter().filter(|p| p.is_service()) {
        for dependency in &package.dependencies {
            if dependency.name != package.name && SERVICES.contains(&dependency.name.as_str()) {
                edges.push(format!(
                    "{} → {} ({} dependency)",
                    package.name, dependency.name, dependency.kind
                ));
            }
        }
    }
    assert!(
        edges.is_empty(),
        "a service crate links another service crate; move what they share into a library crate \
         and tests across services into crates/mesh-tests:\n  {}",
        edges.join("\n  ")
    );
}

#[test]
fn no_service_crate_names_another_by_path() {
    let members = members();
    let service_dirs: Vec<(&str, PathBuf)> = members
        .iter()
        .filter(|p| p.is_service())
        .map(|p| {
            let dir = p.dir.canonicalize().unwrap_or_else(|_| p.dir.clone());
            (p.name.as_str(), dir)
        })
        .collect();
    let mut edges = Vec::new();
    for package in members.iter().filter(|p| p.is_service()) {
        for dependency in &package.dependencies {
            let Some(path) = &dependency.path else {
                continue;
            };
            let path = path.canonicalize().unwrap_or_else(|_| path.clone());
            for (service, dir) in &service_dirs {
                if *service != package.name && path == *dir {
                    edges.push(format!(
                        "{}/Cargo.toml → {} ({} dependency by path, as `{}`)",
                        relative(&package.dir),
                        relative(dir),
                        dependency.kind,
                        dependency.key
                    ));
                }
            }
        }
    }
    assert!(
        edges.is_empty(),
        "a service crate's Cargo.toml depends on another service's folder:\n  {}",
        edges.join("\n  ")
    );
}

#[test]
fn every_crate_laid_out_as_a_service_is_held_to_the_rules() {
    let members = members();
    for service in SERVICES {
        assert!(
            members.iter().any(|p| p.name == service),
            "{service} is listed in SERVICES but is no workspace member (renamed? update SERVICES)"
        );
    }
    let unlisted: Vec<String> = members
        .iter()
        .filter(|p| !p.is_service())
        .filter(|p| p.dir.join("src/main.rs").is_file() && p.dir.join("src/startup.rs").is_file())
        .map(|p| format!("{} ({})", p.name, relative(&p.dir)))
        .collect();
    assert!(
        unlisted.is_empty(),
        "laid out as a service (src/main.rs and src/startup.rs) but not in SERVICES: {}",
        unlisted.join(", ")
    );
}
