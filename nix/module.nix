# services.hive-ci-prefetch: before the CI runner's nixos-container starts,
# check that its .runner is still registered at the forge and write the
# runner's token file (the current registration token, else the remembered
# one, else a placeholder; TOKEN=<value> or the raw value, see tokenFormat).
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
  # the tests (../shared/nix-eval) does not, and defining an undeclared
  # option fails even under mkIf false. The warning below makes the
  # difference visible instead of silent.
  haveTmpfiles = options.systemd ? tmpfiles;

  # Forges on this host whose unit should be up first ("after" only: the
  # tool waits for the forge and its admin token up to retryTimeout, and
  # the container must still start when the forge is down). `or false`:
  # evaluates on systems that lack the option (the offline kit).
  forgeUnits =
    lib.optional (config.services.forgejo.enable or false) "forgejo.service"
    ++ lib.optional (config.services.gitea.enable or false) "gitea.service";

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
  ++ cfg.extraArgs;

  # The same sandbox as contrib/systemd/hive-ci-prefetch.service; the reasons
  # are spelled out there.
  sandbox = {
    # Runs as root, but the only privilege it keeps is CAP_DAC_OVERRIDE:
    # reading the forge's admin token file and the container's .runner
    # (owned by other uids, possibly 0600, behind 0700 directories) and
    # unlinking .runner in a directory owned by the runner's DynamicUser.
    # No sticky directory and no chmod/utime of foreign files: no CAP_FOWNER.
    CapabilityBoundingSet = [ "CAP_DAC_OVERRIDE" ];
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

    # It talks to the forge over loopback, the network or a Unix socket.
    PrivateNetwork = false;
    RestrictAddressFamilies = [
      "AF_UNIX"
      "AF_INET"
      "AF_INET6"
    ];

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
      description = "Base URL of the Forgejo forge.";
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
        for runner modules that read {option}`tokenFile` as an
        `EnvironmentFile=`; `raw` writes the bare value, which newer
        nixpkgs runner modules (`LoadCredential=`) prefer.
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
      description = "How many seconds to keep asking the forge for a registration token.";
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
        assertions = map (
          { name, file }:
          {
            assertion = !sharedDir (dirOf file);
            message = "services.hive-ci-prefetch.${name} = \"${file}\": its directory ${dirOf file} would be made writable for the unit and created or chmodded root 0700; give the file a directory of its own (e.g. /run/hive-ci/runner-token, /var/lib/hive-ci-prefetch/hive-ci.json).";
          }
        ) writtenFiles;

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
