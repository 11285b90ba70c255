# services.hive-ci-prefetch: before the CI runner's nixos-container starts,
# check that its .runner is still registered at the forge and write the
# runner's token file (TOKEN=<registration token> or TOKEN=placeholder).
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:

let
  inherit (lib) mkOption types;

  cfg = config.services.hive-ci-prefetch;

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

  # An output under /run/ becomes the unit's RuntimeDirectory=: systemd
  # creates it (root, 0700) before the tool runs and makes it writable in the
  # sandbox. RuntimeDirectoryPreserve= keeps it when this unit stops, because
  # the container bind-mounts the file and must find it on its next start.
  outputDir = dirOf cfg.output;
  outputInRun = lib.hasPrefix "/run/" outputDir;

  args = [
    (lib.getExe cfg.package)
    "--forge-url=${cfg.forgeUrl}"
    "--core-token-file=${cfg.coreTokenFile}"
    "--container-root=${cfg.containerRoot}"
    "--runner-file=${cfg.runnerFile}"
    "--output=${cfg.output}"
    "--retry-timeout=${toString cfg.retryTimeout}"
  ]
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
    ReadWritePaths = [ "-${cfg.containerRoot}" ] ++ lib.optional (!outputInRun) "-${outputDir}";
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
      type = types.str;
      default = "/var/lib/hyperhive/forge-core-token";
      description = "File holding the forge's site-admin API token.";
    };

    containerName = mkOption {
      type = types.str;
      default = "hive-ci";
      description = ''
        Name of the nixos-container (`containers.<name>`) that runs the
        CI runner. This unit runs before `container@<name>.service`.
      '';
    };

    containerRoot = mkOption {
      type = types.str;
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
      type = types.str;
      default = "/var/lib/gitea-runner/hive/.runner";
      description = ''
        Path of the runner's `.runner` file as seen inside the container.
        It is resolved inside {option}`containerRoot`, symlinks included.
      '';
    };

    output = mkOption {
      type = types.str;
      default = "/run/hive-ci/runner-token";
      description = ''
        Token file to write. Bind-mount it read-only into the container and
        use it as the runner's `tokenFile`.
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

  config = lib.mkIf cfg.enable {
    systemd.services.hive-ci-prefetch = {
      description = "Check the ${cfg.containerName} CI runner's registration and fetch its token";

      # The container only wants this unit: if the check fails the container
      # still starts, and the placeholder token makes that safe.
      wantedBy = [ containerUnit ];
      before = [ containerUnit ];
      # RemainAfterExit keeps this unit active, so without PartOf a restart
      # of the container would not run the check again.
      partOf = [ containerUnit ];
      # forgejo.service: a forge on this host should be up first. After= on a
      # unit that does not exist is a no-op, and the tool retries for
      # retryTimeout anyway, so this needs no option.
      after = [
        "network.target"
        "forgejo.service"
      ];
      # Only meaningful before the container starts: a rerun while it runs
      # would race the runner writing .runner, and the container's file bind
      # mount would not see a replaced token file anyway.
      restartIfChanged = false;

      unitConfig.RequiresMountsFor = [ cfg.containerRoot ];

      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        # Not lib.escapeShellArgs: systemd also expands % specifiers and $VAR
        # in ExecStart=, which this escapes (a URL may well contain %).
        ExecStart = utils.escapeSystemdExecArgs args;
      }
      // lib.optionalAttrs outputInRun {
        RuntimeDirectory = lib.removePrefix "/run/" outputDir;
        # Root only. Fine while the container shares the host's uids
        # (privateUsers = "no", the default).
        RuntimeDirectoryMode = "0700";
        RuntimeDirectoryPreserve = true;
      }
      // sandbox;
    };
  };
}
