# services.hive-ci-prefetch: before the CI runner's nixos-container starts,
# check that its .runner is still registered at the Forgejo or Gitea forge
# and write the runner's token file. With registration = "container" the
# file holds the current registration token (else the remembered one, else
# a placeholder) and the runner module registers inside the container; with
# registration = "host" the tool registers the runner itself, writes .runner
# into the container, and the file holds only a placeholder. TOKEN=<value>
# or the raw value, see tokenFormat.
#
# services.hyperhive.ci (./hive-ci.nix, imported below) declares the
# container and its runner and sets all of this from one switch.
{
  config,
  options,
  lib,
  pkgs,
  utils,
  ...
}:

let
  inherit (lib) mkOption types;

  cfg = config.services.hive-ci-prefetch;

  # Paths that end up in ExecStart=, ReadWritePaths=, RequiresMountsFor= or a
  # tmpfiles rule: absolute, normalized, and free of what systemd would read
  # as a separator, a quote, an escape or a % specifier there. A string, not
  # a Nix path: a path literal would copy the file into the world-readable
  # Nix store.
  absolutePath =
    types.addCheck (types.strMatching "(/[^/[:space:][:cntrl:]\"'\\\\%]+)+") (
      p:
      !lib.any (c: c == "." || c == "..") (lib.splitString "/" p)
    )
    // {
      description = "absolute path (normalized; no whitespace, quotes, backslashes or %)";
    };

  stateOn = cfg.stateFile != null && cfg.stateFile != "";

  # nixos-containers defines containers.<name> as the unit
  # container@<name>.service. (Issue text says nixos-container@<name>.service;
  # no such unit exists: nixos-container is only the command-line tool.)
  containerUnit = "container@${cfg.containerName}.service";

  # Where nixos-containers keeps container roots: /var/lib/containers before
  # system.stateVersion 22.05, /var/lib/nixos-containers since.
  containerStateDir =
    if lib.versionAtLeast config.system.stateVersion "22.05" then
      "/var/lib/nixos-containers"
    else
      "/var/lib/containers";

  # The directories the tool writes files in (output; state file), each
  # created root 0700 before the tool runs and writable in its sandbox:
  # - under /run/: RuntimeDirectory=. RuntimeDirectoryPreserve= keeps it when
  #   this unit stops, because the container bind-mounts the file and must
  #   find it on its next start;
  # - under /var/lib/hive-ci-prefetch: StateDirectory=;
  # - anywhere else: a systemd-tmpfiles rule and ReadWritePaths= (without
  #   "-": a directory that is missing fails the unit loudly).
  # systemd chmods/chowns an existing directory of each kind, so none may be
  # a directory other programs use (see the assertions).
  outputDir = dirOf cfg.output;
  stateDir = dirOf cfg.stateFile;
  dirs = lib.unique ([ outputDir ] ++ lib.optional stateOn stateDir);
  stateRoot = "/var/lib/hive-ci-prefetch";
  inRun = d: lib.hasPrefix "/run/" d;
  inStateRoot = d: d == stateRoot || lib.hasPrefix "${stateRoot}/" d;
  runtimeDirs = map (lib.removePrefix "/run/") (lib.filter inRun dirs);
  stateDirs = map (lib.removePrefix "/var/lib/") (lib.filter inStateRoot dirs);
  otherDirs = lib.filter (d: !inRun d && !inStateRoot d) dirs;
  writtenFiles = [
    {
      name = "output";
      file = cfg.output;
    }
  ]
  ++ lib.optional stateOn {
    name = "stateFile";
    file = cfg.stateFile;
  };

  # Directories that are not this tool's to make writable or to chmod 0700.
  sharedDir =
    d:
    builtins.length (lib.splitString "/" d) <= 2 # "/" and /run, /var, /etc, ...
    || lib.elem d [
      "/var/lib"
      "/var/cache"
      "/var/log"
      "/var/tmp"
      "/var/spool"
      "/run/user"
      "/run/systemd"
      "/run/lock"
      "/run/credentials"
      "/run/wrappers"
      "/nix/store"
      "/nix/var"
    ];

  # A real NixOS always has systemd.tmpfiles; the offline evaluation kit of
  # the tests (../shared/nix-eval) has it only in its `full` base, and
  # defining an undeclared option fails even under mkIf false. The warning
  # below makes the difference visible instead of silent.
  haveTmpfiles = options.systemd ? tmpfiles;

  # Forges on this host whose unit should be up first ("after" only: the
  # tool waits for the forge and its admin token up to retryTimeout, and
  # the container must still start when the forge is down). `or false`:
  # evaluates on systems that lack the option (the offline kit).
  forgejoOn = config.services.forgejo.enable or false;
  giteaOn = config.services.gitea.enable or false;
  forgeUnits = lib.optional forgejoOn "forgejo.service" ++ lib.optional giteaOn "gitea.service";

  hostMode = cfg.registration == "host";

  # The host part of forgeUrl (brackets kept for IPv6), or null.
  urlHost =
    let
      m = builtins.match "[A-Za-z][A-Za-z0-9+.-]*://(\\[[^]]*]|[^]/:?#[]*)(:[0-9]*)?([/?#].*)?" cfg.forgeUrl;
    in
    if m == null then null else lib.toLower (lib.head m);
  urlScheme = lib.toLower (lib.head (lib.splitString ":" cfg.forgeUrl));
  # What the tool accepts as loopback for --forge-user over plain http
  # (localhost included here, so that this assertion never refuses what the
  # tool might accept; the tool has the last word).
  loopback =
    h:
    h != null
    && (
      lib.hasPrefix "127." h
      || lib.elem h [
        "localhost"
        "[::1]"
        "[0:0:0:0:0:0:0:1]"
        "[::ffff:127.0.0.1]"
      ]
    );

  # The file is at or below the container root, which the container owns:
  # a symlink there could send the tool's write anywhere.
  underRoot = f: f == cfg.containerRoot || lib.hasPrefix "${cfg.containerRoot}/" f;

  args = [
    (lib.getExe cfg.package)
    "--forge-url=${cfg.forgeUrl}"
    "--core-token-file=${cfg.coreTokenFile}"
    "--container-root=${cfg.containerRoot}"
    "--runner-file=${cfg.runnerFile}"
    "--output=${cfg.output}"
    "--retry-timeout=${toString cfg.retryTimeout}"
    # Always given: the module's default differs from the binary's (it
    # follows containerName), and "" turns the memory off.
    "--state-file=${if stateOn then cfg.stateFile else ""}"
    "--token-format=${cfg.tokenFormat}"
  ]
  ++ lib.optional cfg.placeholderOnKeep "--placeholder-on-keep"
  ++ lib.optional (!cfg.cleanup) "--no-cleanup"
  ++ lib.optional (cfg.unixSocket != null) "--unix-socket=${cfg.unixSocket}"
  ++ lib.optional (cfg.caFile != null) "--ca-file=${cfg.caFile}"
  ++ lib.optional (cfg.forgeUser != null) "--forge-user=${toString cfg.forgeUser}"
  ++ [ "--registration=${cfg.registration}" ]
  # Only the host registers with these; in container mode the runner
  # module's own settings (its instance's name and labels) apply.
  ++ lib.optionals hostMode (
    [
      "--runner-name=${cfg.runnerName}"
      "--labels=${lib.concatStringsSep "," cfg.labels}"
    ]
    ++ lib.optional (cfg.runnerAddress != null) "--runner-address=${cfg.runnerAddress}"
  )
  ++ cfg.extraArgs;

  # The same sandbox as contrib/systemd/hive-ci-prefetch.service; the reasons
  # are spelled out there.
  sandbox = {
    # Runs as root, but the only privilege it keeps is CAP_DAC_OVERRIDE:
    # reading the forge's admin token file and the container's .runner
    # (owned by other uids, possibly 0600, behind 0700 directories) and
    # unlinking .runner in a directory owned by the runner's DynamicUser.
    # In host mode also CAP_CHOWN: the .runner it writes and the directories
    # it creates get the runner's owner. Still no CAP_FOWNER: no directory
    # involved is sticky, and the tool sets the mode of what it creates
    # while it still owns it (fchmod before fchown); a chmod after the chown
    # would need CAP_FOWNER and fail here with EPERM.
    CapabilityBoundingSet = [ "CAP_DAC_OVERRIDE" ] ++ lib.optional hostMode "CAP_CHOWN";
    NoNewPrivileges = true;

    ProtectSystem = "strict";
    # The whole container root, not its runner directory: systemd follows
    # symlinks in these paths on the host, and everything below the root is
    # the container's to replace with a symlink (var/lib/gitea-runner already
    # is one). The root itself lives in a host directory, so this grants only
    # what the container's own root already controls. "-": on first boot the
    # root does not exist yet.
    ReadWritePaths = [ "-${cfg.containerRoot}" ] ++ otherDirs;
    ProtectHome = true;
    PrivateTmp = true;
    PrivateDevices = true;
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectClock = true;
    ProtectHostname = true;
    ProtectProc = "invisible";

    # It talks to the forge over loopback, the network or a Unix socket;
    # with --forge-user it asks the kernel (NETLINK_SOCK_DIAG) which uid
    # holds the forge's port.
    PrivateNetwork = false;
    RestrictAddressFamilies = [
      "AF_UNIX"
      "AF_INET"
      "AF_INET6"
    ]
    ++ lib.optional (cfg.forgeUser != null) "AF_NETLINK";

    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    LockPersonality = true;
    MemoryDenyWriteExecute = true;
    SystemCallArchitectures = "native";
    # openat2 and renameat2 are in @file-system, part of @system-service.
    SystemCallFilter = [ "@system-service" ];
    SystemCallErrorNumber = "EPERM";
    UMask = "0077";
  };
in
{
  imports = [ ./hive-ci.nix ];

  options.services.hive-ci-prefetch = {
    enable = lib.mkEnableOption "the CI runner registration check and token fetch before its container starts";

    package = mkOption {
      type = types.package;
      # Built with the host's nixpkgs, so the module also works without the
      # flake and the system closure holds a single curl and glibc.
      default = pkgs.callPackage ./package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage ./nix/package.nix { }";
      description = "The hive-ci-prefetch package to use.";
    };

    forgeUrl = mkOption {
      type = types.str;
      default = "http://127.0.0.1:3000";
      description = ''
        Base URL of the Forgejo or Gitea forge, as the host reaches it.
      '';
    };

    forgeUser = mkOption {
      type = types.nullOr (types.either types.ints.u32 (types.strMatching "[A-Za-z_][A-Za-z0-9_.-]*[$]?"));
      default =
        if forgejoOn then
          config.services.forgejo.user
        else if giteaOn then
          config.services.gitea.user
        else
          null;
      defaultText = lib.literalMD ''
        {option}`services.forgejo.user` when {option}`services.forgejo.enable`
        is set on this host, else {option}`services.gitea.user` when
        {option}`services.gitea.enable` is, else `null`
      '';
      example = "forgejo";
      description = ''
        User (name or numeric uid) that must own the forge's server socket.
        Before the first request on every connection the tool checks who
        holds the other end (TCP on loopback: the listening socket's owner as
        the kernel reports it; {option}`unixSocket`: `SO_PEERCRED`) and sends
        nothing, not the admin token either, to any other owner (exit 69).
        This stops a CI job that binds the forge's port while the forge
        restarts (the container shares the host's network) from receiving
        the admin token. Passed as `--forge-user`; the unit may then use
        `AF_NETLINK`. The tool refuses it with a plain-http
        {option}`forgeUrl` whose host is not a loopback address. `null`: no
        check.
      '';
    };

    unixSocket = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/run/forgejo/forgejo.sock";
      description = ''
        Talk HTTP over this Unix socket (Forgejo's `PROTOCOL = http+unix`).
        The host of {option}`forgeUrl` then only names the Host header.
      '';
    };

    caFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      description = ''
        CA bundle to trust for an https forge. Certificates are always
        verified; without this the system's trust store is used.
      '';
    };

    coreTokenFile = mkOption {
      # A string, not a path: a path literal here would copy the secret into
      # the world-readable Nix store.
      type = absolutePath;
      default = "/var/lib/hyperhive/forge-core-token";
      description = "File holding the forge's site-admin API token.";
    };

    containerName = mkOption {
      # A nixos-container name; it also names units and the state file.
      type = types.strMatching "[A-Za-z0-9][A-Za-z0-9_-]*";
      default = "hive-ci";
      description = ''
        Name of the nixos-container (`containers.<name>`) that runs the
        CI runner. This unit runs before `container@<name>.service`.
      '';
    };

    containerRoot = mkOption {
      type = absolutePath;
      default = "${containerStateDir}/${cfg.containerName}";
      defaultText = lib.literalMD ''
        `/var/lib/nixos-containers/<containerName>`
        (`/var/lib/containers/<containerName>` when
        {option}`system.stateVersion` is older than 22.05, as nixos-containers
        does)
      '';
      description = "The container's root directory on the host.";
    };

    runnerFile = mkOption {
      type = absolutePath;
      default = "/var/lib/gitea-runner/hive/.runner";
      description = ''
        Path of the runner's `.runner` file as seen inside the container.
        It is resolved inside {option}`containerRoot`, symlinks included.
        For `services.gitea-actions-runner.instances.<name>` (every
        generation) it is `/var/lib/gitea-runner/<name>/.runner`; for
        `services.forgejo.runner.instances.<attr>` it is
        `/var/lib/forgejo-runner/<instance name>/.runner` (the instance's
        `name`, which is also its unit `forgejo-runner@<name>`).
        {option}`services.hyperhive.ci` sets it.
      '';
    };

    output = mkOption {
      type = absolutePath;
      default = "/run/hive-ci/runner-token";
      description = ''
        Token file to write. Bind-mount it read-only into the container and
        use it as the runner's `tokenFile`. Its directory is the tool's own:
        created root 0700 (`RuntimeDirectory=` under /run, else a
        systemd-tmpfiles rule) and writable in the unit's sandbox.
      '';
    };

    stateFile = mkOption {
      type = types.nullOr (types.either (types.enum [ "" ]) absolutePath);
      default = "${stateRoot}/${cfg.containerName}.json";
      defaultText = lib.literalExpression ''"/var/lib/hive-ci-prefetch/''${containerName}.json"'';
      description = ''
        What the host remembers across boots (the last token written, the
        runner the forge confirmed, superseded runners to clean up); JSON,
        root only. Under /var/lib/hive-ci-prefetch it is the unit's
        `StateDirectory=` (mode 0700). `null` or `""` turns the memory off.
      '';
    };

    tokenFormat = mkOption {
      type = types.enum [
        "env"
        "raw"
      ];
      default = "env";
      description = ''
        How the token file holds the token: `env` writes `TOKEN=<value>`,
        `raw` the bare value. It must be what the container's runner module
        reads from its `tokenFile`:

        - `services.gitea-actions-runner` up to NixOS 25.11, and the same
          module after nixpkgs PR 516679 (NixOS 26.05): `EnvironmentFile=`,
          so `env` (a bare value leaves `$TOKEN` empty and registration
          fails);
        - `services.gitea-actions-runner` with nixpkgs PR 559010 (open, not
          in a release): `LoadCredential=`, `raw` (`env` still works there,
          deprecated and warned about at every start);
        - `services.forgejo.runner` (NixOS 26.05 and later):
          `LoadCredential=`, `raw` only (`TOKEN=<value>` would be sent as the
          token and fail).

        In host registration the file holds only the placeholder, but the
        runner unit still needs it readable. {option}`services.hyperhive.ci`
        sets this from the runner module it chose.
      '';
    };

    registration = mkOption {
      type = types.enum [
        "container"
        "host"
      ];
      default = "container";
      description = ''
        Who registers the runner. `container`: the runner module's
        `ExecStartPre` inside the container, with the registration token
        this unit writes to {option}`output`. `host`: the tool registers the
        runner through the runners' own protocol, writes `.runner` into the
        container (owned by the runner's dynamic user) and writes only
        `TOKEN=placeholder` to {option}`output`, so no forge-wide secret
        enters the container; the runner module's `ExecStartPre` must then
        be disabled (`lib.mkForce [ ]`), or it would delete the host's
        `.runner` and register with the placeholder. Passed as
        `--registration`; `host` gives the unit `CAP_CHOWN`.
      '';
    };

    runnerName = mkOption {
      # As --runner-name takes it: printable ASCII, no space at either end.
      type = types.strMatching "[!-~]([ -~]{0,253}[!-~])?";
      default = "hive";
      description = "The runner's name at the forge when the host registers it (`--runner-name`, host registration only).";
    };

    labels = mkOption {
      # As --labels takes them: a name, then optionally ':' and a scheme of
      # printable ASCII without spaces or commas.
      type = types.listOf (
        types.addCheck (types.strMatching "[A-Za-z0-9._-]+(:[!-~]*)?") (l: !lib.hasInfix "," l)
      );
      default = [ "hive-ci:host" ];
      description = ''
        The runner's labels in full form (`name:host`,
        `name:docker://image`), written into `.runner` when the host
        registers (`--labels`, host registration only). They must match the
        runner instance's `labels`.
      '';
    };

    runnerAddress = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "http://127.0.0.1:3000";
      description = ''
        The forge's URL as the runner in the container reaches it, written
        as `address` into `.runner` (`--runner-address`, host registration
        only). `null`: {option}`forgeUrl`. Needed with {option}`unixSocket`.
      '';
    };

    placeholderOnKeep = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Write the placeholder instead of the current token when the runner
        is still registered (the original design). Breaks nixpkgs' runner
        module since May 2026, which re-registers when the token changes.
      '';
    };

    cleanup = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Delete superseded, offline registrations of this host's runner from
        the forge. `false` passes `--no-cleanup`.
      '';
    };

    retryTimeout = mkOption {
      type = types.ints.between 0 86400;
      default = 30;
      description = ''
        Seconds each step may take, whatever the forge does: the wait for
        the admin token file together with the runner's lookup, and
        separately the registration-token fetch (see the manual page for
        the steps of host registration).
      '';
    };

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "--verbose" ];
      description = "Further command-line arguments for hive-ci-prefetch.";
    };
  };

  config = lib.mkIf cfg.enable (
    lib.mkMerge [
      {
        assertions =
          map (
            { name, file }:
            {
              assertion = !sharedDir (dirOf file);
              message = "services.hive-ci-prefetch.${name} = \"${file}\": its directory ${dirOf file} would be made writable for the unit and created or chmodded root 0700; give the file a directory of its own (e.g. /run/hive-ci/runner-token, /var/lib/hive-ci-prefetch/hive-ci.json).";
            }
          ) writtenFiles
          ++ map (
            { name, file }:
            {
              assertion = !underRoot file;
              message = "services.hive-ci-prefetch.${name} = \"${file}\" is inside the container root ${cfg.containerRoot}, which the container controls (a symlink there could redirect the write); put it on the host, e.g. /run/hive-ci/runner-token or /var/lib/hive-ci-prefetch/${cfg.containerName}.json.";
            }
          ) writtenFiles
          ++ [
            {
              assertion =
                cfg.forgeUser == null || cfg.unixSocket != null || urlScheme == "https" || loopback urlHost;
              message = "services.hive-ci-prefetch.forgeUser = \"${toString cfg.forgeUser}\" with forgeUrl = \"${cfg.forgeUrl}\": the tool checks the owner of a plain-http forge only on a loopback address (and refuses this with exit 64); set forgeUrl to http://127.0.0.1:<port> of the forge on this host, use https, or set forgeUser = null for a forge elsewhere.";
            }
            {
              assertion = cfg.unixSocket == null || !hostMode || cfg.runnerAddress != null;
              message = "services.hive-ci-prefetch.registration = \"host\" with unixSocket: set runnerAddress to the forge's URL as the runner in the container reaches it (it is written into .runner).";
            }
          ];

        warnings = lib.optional (otherDirs != [ ] && !haveTmpfiles) "services.hive-ci-prefetch: this system has no systemd.tmpfiles; ${lib.concatStringsSep ", " otherDirs} will not be created.";

        systemd.services.hive-ci-prefetch = {
          description = "Check the ${cfg.containerName} CI runner's registration and fetch its token";
          documentation = [ "man:hive-ci-prefetch(8)" ];

          # The container only wants this unit: if the check fails the
          # container still starts, and the placeholder token makes that safe.
          wantedBy = [ containerUnit ];
          before = [ containerUnit ];
          # RemainAfterExit keeps this unit active, so without PartOf a
          # restart of the container would not run the check again.
          partOf = [ containerUnit ];
          after = [ "network.target" ] ++ forgeUnits;
          # Only meaningful before the container starts: a rerun while it
          # runs would race the runner writing .runner, and the container's
          # file bind mount would not see a replaced token file anyway.
          restartIfChanged = false;

          unitConfig.RequiresMountsFor = [ cfg.containerRoot ];

          serviceConfig = {
            Type = "oneshot";
            RemainAfterExit = true;
            # Not lib.escapeShellArgs: systemd also expands % specifiers and
            # $VAR in ExecStart=, which this escapes (a URL may well hold %).
            ExecStart = utils.escapeSystemdExecArgs args;
          }
          // lib.optionalAttrs hostMode {
            # Host registration writes .runner before the container's first
            # start, when its root may not exist yet: ReadWritePaths= skips
            # a missing path ("-"), and below ProtectSystem=strict the tool
            # could not create it. Made here, outside the sandbox ("+"),
            # 0755 root as nixos-containers makes it; never chmodded after.
            ExecStartPre = "+" + utils.escapeSystemdExecArgs [
              "${pkgs.coreutils}/bin/mkdir"
              "-p"
              "-m"
              "0755"
              cfg.containerRoot
            ];
          }
          // lib.optionalAttrs (runtimeDirs != [ ]) {
            RuntimeDirectory = runtimeDirs;
            # Root only. Fine while the container shares the host's uids
            # (privateUsers = "no", the default).
            RuntimeDirectoryMode = "0700";
            RuntimeDirectoryPreserve = true;
          }
          // lib.optionalAttrs (stateDirs != [ ]) {
            StateDirectory = stateDirs;
            StateDirectoryMode = "0700";
          }
          // sandbox;
        };
      }

      (lib.optionalAttrs haveTmpfiles {
        systemd.tmpfiles.settings.hive-ci-prefetch = lib.genAttrs otherDirs (_: {
          d = {
            mode = "0700";
            user = "root";
            group = "root";
          };
        });
      })
    ]
  );
}
