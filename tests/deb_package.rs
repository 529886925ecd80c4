//! The Debian package (`cargo deb`, README "Install on a LAN box"): built from the binary under
//! test, it holds the binary, the unit, the default configuration as conffiles and maintainer
//! scripts that create the `lang-agent` user; and, where the machine allows (root and
//! overlayfs), it installs into a throwaway root (an overlay over this machine's `/`, so the
//! machine itself is untouched), starts there as that user with the unit's command line,
//! keeps an edited conffile on upgrade, and leaves the conversation log behind on purge.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use serde_json::json;

/// The package, built with `cargo deb` from the debug binary the tests use (`--profile dev`:
/// a release build would double the test run; the package's layout is the same).
fn build_package(out: &Path) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let probe = Command::new(&cargo).args(["deb", "--version"]).output();
    assert!(
        probe.is_ok_and(|o| o.status.success()),
        "cargo-deb is missing: scripts/install-test-deps.sh installs it"
    );
    let built = run(Command::new(&cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "deb",
            "--no-build",
            "--profile",
            "dev",
            "--no-strip",
            "--fast",
        ])
        .arg("--output")
        .arg(out));
    let deb = String::from_utf8_lossy(&built.stdout).trim().to_string();
    assert!(deb.ends_with(".deb"), "cargo deb printed {deb:?}");
    PathBuf::from(deb)
}

/// Runs `command`, which must succeed; its output.
fn run(command: &mut Command) -> Output {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(command: &mut Command) -> String {
    String::from_utf8(run(command).stdout).unwrap()
}

#[test]
fn the_package_installs_starts_upgrades_and_purges_in_a_throwaway_root() {
    let dir = tempfile::tempdir().unwrap();
    let deb = build_package(dir.path());

    // Contents: the binary, the unit, the configuration; the env file is root's alone.
    let contents = stdout(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let entry = |path: &str| {
        contents
            .lines()
            .find(|l| l.ends_with(path))
            .unwrap_or_else(|| panic!("{path} not in the package:\n{contents}"))
    };
    assert!(entry("./usr/bin/lang-agent").starts_with("-rwxr-xr-x"));
    entry("./usr/lib/systemd/system/lang-agent.service");
    entry("./etc/lang-agent/mcp_config.json");
    entry("./etc/lang-agent/route_sys_prompts/chat_prompt.txt");
    assert!(entry("./etc/lang-agent/env").starts_with("-rw-------"));

    // Control: what dpkg keeps on upgrade, and the scripts that make the user and the unit.
    let control = stdout(Command::new("dpkg-deb").arg("-I").arg(&deb).arg("control"));
    assert!(control.contains("Package: lang-agent"), "{control}");
    assert!(control.contains("adduser"), "{control}");
    let conffiles = stdout(
        Command::new("dpkg-deb")
            .arg("-I")
            .arg(&deb)
            .arg("conffiles"),
    );
    for file in [
        "/etc/lang-agent/env",
        "/etc/lang-agent/mcp_config.json",
        "/etc/lang-agent/route_sys_prompts/chat_prompt.txt",
    ] {
        assert!(conffiles.lines().any(|l| l == file), "{file}: {conffiles}");
    }
    let postinst = stdout(Command::new("dpkg-deb").arg("-I").arg(&deb).arg("postinst"));
    assert!(postinst.contains("adduser --system"), "{postinst}");
    assert!(postinst.contains("deb-systemd-helper enable lang-agent.service"));
    assert!(!postinst.contains("#DEBHELPER#"), "cargo-deb filled it in");

    let root = match ThrowawayRoot::mount(dir.path()) {
        Ok(root) => root,
        Err(reason) => {
            eprintln!("SKIPPED installing the package: {reason}; the contents were checked");
            return;
        }
    };
    std::fs::copy(&deb, root.path("tmp/lang-agent.deb")).unwrap();

    // Install: the user, its private state directory, and where the keys are.
    let installed = stdout(&mut root.chroot(&["dpkg", "-i", "/tmp/lang-agent.deb"]));
    assert!(
        installed.contains("/etc/lang-agent/env") && installed.contains("keys list"),
        "the install says where the keys go: {installed}"
    );
    // The first client key is made by the install and shown there, once.
    let key = installed
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("The first client key (shown only now): ")
        })
        .unwrap_or_else(|| panic!("no key in {installed}"))
        .to_string();
    let user = stdout(&mut root.chroot(&["getent", "passwd", "lang-agent"]));
    assert!(user.contains("/var/lib/lang-agent"), "{user}");
    let state = stdout(&mut root.chroot(&["stat", "-c", "%U %a", "/var/lib/lang-agent"]));
    assert_eq!(state.trim(), "lang-agent 700");

    // Start as the unit does: its user, its command line.
    let mock = Mock::start(0, 0);
    let mut serve = root.chroot_as(
        "lang-agent",
        &[
            "/usr/bin/lang-agent",
            "--data-dir",
            "/var/lib/lang-agent",
            "--config-dir",
            "/etc/lang-agent",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--viewer-port",
            "0",
            "--base-url",
            &mock.base_url,
        ],
    );
    serve
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", "/var/lib/lang-agent/home")
        .env("LANG_AGENT_LOG", "info");
    // The key file root wrote belongs to the service's user, private.
    let owner =
        stdout(&mut root.chroot(&["stat", "-c", "%U %a", "/var/lib/lang-agent/api_keys.json"]));
    assert_eq!(owner.trim(), "lang-agent 600");
    let server = Server::ready(Proc::spawn(serve), &root.path("var/lib/lang-agent"));
    assert!(
        !server.proc.log().contains(&key),
        "the service never prints it"
    );
    let answer = tokio::runtime::Runtime::new().unwrap().block_on(async {
        http()
            .post(format!("{}/api/v1/apps/app1/completion", server.url))
            .bearer_auth(key.trim())
            .json(&json!({"input": {"prompt": "hello from the package"}}))
            .send()
            .await
            .unwrap()
    });
    assert_eq!(answer.status(), 200);
    drop(server);
    assert!(root.path("var/lib/lang-agent/lang-agent.sqlite3").exists());

    // A stdio MCP server started by `npx`, as the README shows, with the unit's user, umask
    // and Environment= (its home and npm cache): doctor connects and lists its tools.
    let (node_dir, npx) = everything_npx_config();
    std::fs::write(root.path("tmp/mcp.json"), npx.to_string()).unwrap();
    let unit =
        std::fs::read_to_string(root.path("usr/lib/systemd/system/lang-agent.service")).unwrap();
    let script = format!(
        "umask 077; cd '{}' && exec /usr/bin/lang-agent --data-dir /var/lib/lang-agent \
         --config-dir /etc/lang-agent --base-url '{}' doctor --mcp-config /tmp/mcp.json",
        node_dir.display(),
        mock.base_url
    );
    let mut doctor = root.chroot_as("lang-agent", &["/bin/sh", "-c", &script]);
    doctor
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("ALI_API_KEY", UPSTREAM_KEY);
    for (name, value) in unit_environment(&unit) {
        doctor.env(name, value);
    }
    let report = stdout(&mut doctor);
    let mcp = report
        .lines()
        .find(|l| l.contains("MCP server everything"))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(mcp.starts_with("ok ") && mcp.contains("tools"), "{report}");

    // Upgrade (the same package again): the user's edit of a conffile stays.
    let prompt = root.path("etc/lang-agent/route_sys_prompts/chat_prompt.txt");
    std::fs::write(&prompt, "You are the shop's assistant.\n").unwrap();
    run(&mut root.chroot(&["dpkg", "-i", "/tmp/lang-agent.deb"]));
    assert_eq!(
        std::fs::read_to_string(&prompt).unwrap(),
        "You are the shop's assistant.\n"
    );

    // Remove keeps the configuration; purge removes it; the conversation log stays.
    run(&mut root.chroot(&["dpkg", "-r", "lang-agent"]));
    assert!(!root.path("usr/bin/lang-agent").exists());
    assert!(prompt.exists(), "remove keeps conffiles");
    run(&mut root.chroot(&["dpkg", "-P", "lang-agent"]));
    assert!(!prompt.exists(), "purge removes conffiles");
    assert!(root.path("var/lib/lang-agent/lang-agent.sqlite3").exists());
}

/// The variables the unit's `Environment=` lines set.
fn unit_environment(unit: &str) -> Vec<(String, String)> {
    let vars: Vec<(String, String)> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .flat_map(str::split_whitespace)
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert!(vars.iter().any(|(k, _)| k == "HOME"), "{vars:?}");
    vars
}

/// This machine's `/` under a writable overlay, with `/proc` and a `/dev` of its own: a root
/// to install a package into and throw away. Unmounted on drop.
struct ThrowawayRoot {
    merged: PathBuf,
    mounts: Vec<PathBuf>,
}

impl ThrowawayRoot {
    fn mount(dir: &Path) -> Result<ThrowawayRoot, String> {
        if !rustix::process::geteuid().is_root() {
            return Err("not root, so no overlay and no chroot".into());
        }
        let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("merged"));
        for d in [&upper, &work, &merged] {
            std::fs::create_dir_all(d).unwrap();
        }
        let mut root = ThrowawayRoot {
            merged: merged.clone(),
            mounts: Vec::new(),
        };
        let options = format!(
            "lowerdir=/,upperdir={},workdir={}",
            upper.display(),
            work.display()
        );
        root.mount_one(&["-t", "overlay", "overlay", "-o", &options], &merged)?;
        root.mount_one(&["-t", "proc", "proc"], &merged.join("proc"))?;
        // A /dev of its own (never the machine's: nothing here may reach the real nodes).
        root.mount_one(&["-t", "tmpfs", "tmpfs"], &merged.join("dev"))?;
        for (node, minor) in [
            ("null", "3"),
            ("zero", "5"),
            ("random", "8"),
            ("urandom", "9"),
        ] {
            let made = Command::new("mknod")
                .args(["-m", "666"])
                .arg(merged.join("dev").join(node))
                .args(["c", "1", minor])
                .status();
            if !made.is_ok_and(|s| s.success()) {
                return Err(format!("cannot make /dev/{node} in the throwaway root"));
            }
        }
        Ok(root)
    }

    fn mount_one(&mut self, args: &[&str], target: &Path) -> Result<(), String> {
        let out = Command::new("mount")
            .args(args)
            .arg(target)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount {args:?} refused: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        self.mounts.push(target.to_path_buf());
        Ok(())
    }

    /// A path inside the root (`rel` without its leading `/`).
    fn path(&self, rel: &str) -> PathBuf {
        self.merged.join(rel)
    }

    fn chroot(&self, command: &[&str]) -> Command {
        let mut chroot = Command::new("chroot");
        chroot.arg(&self.merged).args(command);
        chroot
    }

    fn chroot_as(&self, user: &str, command: &[&str]) -> Command {
        let mut chroot = Command::new("chroot");
        chroot
            .arg(format!("--userspec={user}:{user}"))
            .arg(&self.merged)
            .args(command);
        chroot
    }
}

impl Drop for ThrowawayRoot {
    fn drop(&mut self) {
        for target in self.mounts.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(target).status();
        }
    }
}
