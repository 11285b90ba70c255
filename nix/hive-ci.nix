# services.hyperhive.ci: one switch for the CI container of the hive. It
# declares the nixos-container (sharing the host's network, non-ephemeral),
# the stock nixpkgs runner inside it (services.forgejo.runner or
# services.gitea-actions-runner, whichever the container's nixpkgs offers
# and the forge suits), the read-only bind mount of the token file, the
# forge's admin token (hive-ci-admin-token.service, with the forge's own
# command line) and services.hive-ci-prefetch to match.
#
# Which runner module the container uses is decided inside the container's
# configuration, from its own `options` (the host cannot look at the
# container's evaluated config to decide what to put into it: that
# recurses), and read back by the host through an internal option of the
# container, services.hyperhive.ci.container. The token file's format and
# the path of .runner follow from that choice.
{
  config,
  options,
  lib,
  pkgs,
  utils,
  ...
}:

let
  inherit (lib)
    literalExpression
    literalMD
    mkDefault
    mkEnableOption
    mkForce
    mkIf
    mkOption
    types
    ;

  cfg = config.services.hyperhive.ci;
  prefetch = config.services.hive-ci-prefetch;
  hostConfig = config;

  # The forge. A hyperhive forge module, where one exists, writes the admin
  # token file itself; otherwise exactly one of forgejo and gitea on this
  # host is the forge, or forgeUrl names one elsewhere.
  hyperhiveForge = (options.services.hyperhive or { }) ? forge && (config.services.hyperhive.forge.enable or false);
  localForges =
    lib.optional (config.services.forgejo.enable or false) "forgejo"
    ++ lib.optional (config.services.gitea.enable or false) "gitea";
  forge = if lib.length localForges == 1 then lib.head localForges else null;
  forgeCfg = config.services.${forge};
  forgeUnit = "${forge}.service";
  forgeIsForgejo = forge == "forgejo";

  # http(s)://127.0.0.1:<HTTP_PORT> for a forge on this host that listens on
  # loopback or on every address; null when the runner could not reach it
  # there (a Unix socket, fcgi, a single other address).
  server = forgeCfg.settings.server;
  loopbackHost =
    addr:
    let
      a = toString addr;
    in
    if
      lib.elem a [
        ""
        "0.0.0.0"
        "::"
        "[::]"
        "localhost"
      ]
    then
      "127.0.0.1"
    else if builtins.match "127[.][0-9.]+" a != null then
      a
    else if a == "::1" || a == "[::1]" then
      "[::1]"
    else
      null;
  derivedUrl =
    if
      forge != null
      && lib.elem server.PROTOCOL [
        "http"
        "https"
      ]
      && loopbackHost server.HTTP_ADDR != null
    then
      "${server.PROTOCOL}://${loopbackHost server.HTTP_ADDR}:${toString server.HTTP_PORT}"
    else
      null;
  forgeUrl = if cfg.forgeUrl != null then cfg.forgeUrl else derivedUrl;
  # Something to evaluate with while an assertion explains what is missing.
  url = if forgeUrl == null then "" else forgeUrl;

  # What the container's configuration chose (see the header).
  containerCfg = config.containers.${cfg.containerName};
  chosen = containerCfg.config.services.hyperhive.ci.container;

  # nixos-containers keeps a non-ephemeral container's root here.
  containerRoot =
    (if lib.versionAtLeast config.system.stateVersion "22.05" then "/var/lib/nixos-containers" else "/var/lib/containers")
    + "/${cfg.containerName}";

  # services.forgejo.runner: the instance's name is its unit
  # (forgejo-runner@<name>), its dynamic user (forgejo-runner-<name>, at most
  # 31 characters) and its state directory; nixpkgs cannot evaluate a name
  # that systemd would escape.
  forgejoNameOk = builtins.match "[A-Za-z0-9_]{1,16}" cfg.name != null;

  labelForm = l: builtins.match "[^,:[:space:][:cntrl:]]+:(host|docker://[^,[:space:][:cntrl:]]+)" l != null;
  dockerLabels = lib.filter (l: lib.hasInfix ":docker:" l) cfg.labels;

  stage = "/run/hive-ci-admin-token/token";
  adminTokenScript = pkgs.writeShellApplication {
    name = "hive-ci-admin-token";
    runtimeInputs = [ pkgs.coreutils ];
    text = builtins.readFile ./admin-token.sh;
  };
  # The variables the forge's own unit gives its command line (nixpkgs:
  # USER, HOME and FORGEJO_WORK_DIR/FORGEJO_CUSTOM, or GITEA_* for Gitea and
  # older Forgejo modules), else what they would be.
  forgeEnv =
    let
      prefix = lib.toUpper forge;
      given = lib.filterAttrs (
        n: _:
        lib.elem n [
          "USER"
          "HOME"
        ]
        || builtins.match "(FORGEJO|GITEA)_(WORK_DIR|CUSTOM)" n != null
      ) (config.systemd.services.${forge}.environment or { });
      fallback = {
        USER = forgeCfg.user;
        HOME = forgeCfg.stateDir;
      }
      // lib.optionalAttrs (!(given ? GITEA_WORK_DIR)) {
        "${prefix}_WORK_DIR" = forgeCfg.stateDir;
        "${prefix}_CUSTOM" = forgeCfg.customDir or "${forgeCfg.stateDir}/custom";
      };
    in
    fallback // given;

  assertion = ok: message: { assertion = ok; inherit message; };

  # The container's NixOS module: the runner instance in the tree the
  # container's nixpkgs offers, and what was chosen, for the host to read.
  containerModule =
    {
      config,
      options,
      lib,
      ...
    }:
    let
      offers = {
        forgejo-runner = options.services ? forgejo && options.services.forgejo ? runner;
        gitea-actions-runner = options.services ? gitea-actions-runner;
      };
      runner =
        if cfg.runner != "auto" then
          cfg.runner
        else if offers.forgejo-runner && forgeIsForgejo then
          "forgejo-runner"
        else
          "gitea-actions-runner";
      isForgejo = runner == "forgejo-runner";
      # Defined only where it evaluates; the host's assertions say why not.
      defined = offers.${runner} && (isForgejo -> forgejoNameOk);
      unit = if isForgejo then "forgejo-runner@${utils.escapeSystemdPath cfg.name}" else "gitea-runner-hive";
      tree = if isForgejo then config.services.forgejo.runner else config.services.gitea-actions-runner;
      instance = {
        enable = true;
        inherit (cfg) name labels hostPackages;
        inherit url;
        tokenFile = prefetch.output;
        settings.runner.capacity = cfg.concurrency;
      };
      serviceConfig = config.systemd.services.${unit}.serviceConfig or { };
    in
    {
      options.services.hyperhive.ci.container = mkOption {
        type = types.raw;
        internal = true;
        readOnly = true;
        description = ''
          What this container's configuration chose for the host's
          services.hyperhive.ci (the runner module, its unit and .runner,
          the token file's format), read back by the host.
        '';
      };

      config = lib.mkMerge [
        {
          services.hyperhive.ci.container = {
            inherit
              runner
              offers
              defined
              unit
              ;
            runnerFile =
              if isForgejo then "/var/lib/forgejo-runner/${cfg.name}/.runner" else "/var/lib/gitea-runner/hive/.runner";
            # EnvironmentFile= (gitea-actions-runner up to NixOS 26.05)
            # needs TOKEN=<value>; LoadCredential= (forgejo-runner, and
            # gitea-actions-runner with PR 559010) takes the bare token.
            tokenFormat = if !isForgejo && serviceConfig ? EnvironmentFile then "env" else "raw";
            instance = if defined then { inherit (tree.instances.hive) name url labels tokenFile; } else null;
            execStartPre = lib.toList (serviceConfig.ExecStartPre or [ ]);
          };

          system.stateVersion = mkDefault hostConfig.system.stateVersion;
          # nix-daemon.nix defines it false at normal priority. What it
          # changes: the nix client in the container; builds run in the
          # host's daemon under the host's sandbox settings.
          nix.settings.sandbox-fallback = mkForce true;
          nix.settings.experimental-features = [
            "nix-command"
            "flakes"
          ];
        }
        # Not mkIf: an option the container lacks cannot be defined even
        # under mkIf false. `defined` depends on `options` only.
        (
          if !defined then
            { }
          else if isForgejo then
            { services.forgejo.runner.instances.hive = instance; }
          else
            { services.gitea-actions-runner.instances.hive = instance; }
        )
        # The host registers: the module's own registration would delete
        # the host's .runner and register with the placeholder.
        (mkIf (defined && cfg.registration == "host") {
          systemd.services.${unit}.serviceConfig.ExecStartPre = mkForce [ ];
        })
      ];
    };
in
{
  options.services.hyperhive.ci = {
    enable = mkEnableOption "the hive's CI: a nixos-container with the forge's Actions runner, registered and checked by hive-ci-prefetch";

    name = mkOption {
      type = types.strMatching "[!-~]([ -~]{0,253}[!-~])?";
      default = "hive";
      description = ''
        The runner's name in the forge's admin panel. Under
        `services.forgejo.runner` it is also the instance's unit
        (`forgejo-runner@<name>`), dynamic user and state directory, so it
        must match `[A-Za-z0-9_]{1,16}` there.
      '';
    };

    concurrency = mkOption {
      type = types.ints.positive;
      default = 1;
      description = "How many jobs the runner takes at once (its `settings.runner.capacity`).";
    };

    labels = mkOption {
      type = types.listOf types.str;
      default = [ "hive-ci:host" ];
      description = ''
        The runner's labels, in full form: `name:host` runs a job's steps
        directly in the container (with {option}`services.hyperhive.ci.hostPackages`
        on their path), `name:docker://image` in a container runtime, which
        the container must then run. The default lets a workflow say
        `runs-on: [hive-ci]`.
      '';
    };

    forgeUrl = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "https://forge.example.org";
      description = ''
        The forge's URL, for the runner in the container and for
        hive-ci-prefetch on the host (the container shares the host's
        network). `null`: `<PROTOCOL>://127.0.0.1:<HTTP_PORT>` from the
        settings of the forge on this host. Set it for a forge elsewhere,
        on a Unix socket (`http+unix`) or bound to one non-loopback
        `HTTP_ADDR`; an assertion says when.
      '';
    };

    coreTokenFile = mkOption {
      type = types.strMatching "/.+";
      default = "/var/lib/hyperhive/forge-core-token";
      description = ''
        The forge's site-admin API token (scope `write:admin`), root only;
        a string, never a Nix path (that would copy it into the store).
        Written by a hyperhive forge module, or else by
        `hive-ci-admin-token.service` (see
        {option}`services.hyperhive.ci.adminToken.enable`), or by you.
      '';
    };

    registration = mkOption {
      type = types.enum [
        "host"
        "container"
      ];
      default = "host";
      description = ''
        `host`: hive-ci-prefetch registers the runner from the host and
        writes `.runner` into the container; the forge-wide registration
        token never enters the container, and the runner module's own
        registration (`ExecStartPre`) is disabled. `container`: the runner
        module registers inside the container with the registration token
        hive-ci-prefetch writes to the token file (every `:host` job can
        read that token).
      '';
    };

    runner = mkOption {
      type = types.enum [
        "auto"
        "forgejo-runner"
        "gitea-actions-runner"
      ];
      default = "auto";
      description = ''
        The nixpkgs runner module in the container. `auto`:
        `services.forgejo.runner` when the container's nixpkgs has it
        (NixOS 26.05 and later) and the forge is Forgejo, else
        `services.gitea-actions-runner`. The token file's format and the
        path of `.runner` follow from it.
      '';
    };

    containerName = mkOption {
      type = types.strMatching "[A-Za-z0-9][A-Za-z0-9-]{0,62}";
      default = "hive-ci";
      description = "Name of the nixos-container (`containers.<name>`, unit `container@<name>.service`).";
    };

    hostPackages = mkOption {
      type = types.listOf types.package;
      default = [
        pkgs.bash
        pkgs.coreutils
        pkgs.findutils
        pkgs.gnugrep
        pkgs.gnused
        pkgs.gawk
        pkgs.gitMinimal
        pkgs.curl
        pkgs.wget
        pkgs.nodejs
        config.nix.package
      ];
      defaultText = literalExpression ''
        with pkgs; [ bash coreutils findutils gnugrep gnused gawk gitMinimal curl wget nodejs config.nix.package ]
      '';
      description = ''
        What a `:host` job finds on its path. `nodejs` is for JavaScript
        actions such as `actions/checkout`; `nix` (the host's, which the
        container's jobs talk to through the host's nix-daemon) for
        `nix flake check`.
      '';
    };

    adminToken = {
      enable = mkOption {
        type = types.bool;
        default = forge != null && !hyperhiveForge;
        defaultText = literalMD "`true` when the forge runs on this host and no hyperhive forge module writes {option}`services.hyperhive.ci.coreTokenFile`";
        description = ''
          Create {option}`services.hyperhive.ci.coreTokenFile` with the
          forge's own command line (`hive-ci-admin-token.service`, after the
          forge's unit, before hive-ci-prefetch's; skipped while the file
          exists and is not empty): a site-admin user
          {option}`services.hyperhive.ci.adminToken.user` if there is none
          (its generated password is discarded), then an access token with
          the `write:admin` scope. The token is installed root 0600 and
          never printed. Turn it off when something else writes the file.
        '';
      };

      user = mkOption {
        type = types.strMatching "[A-Za-z0-9_][A-Za-z0-9_.-]{0,39}";
        default = "hive-ci-admin";
        description = "The forge user whose access token hive-ci-prefetch uses; created as a site administrator if missing.";
      };

      email = mkOption {
        type = types.strMatching "[^[:space:][:cntrl:]]+@[^[:space:][:cntrl:]]+";
        default = "${cfg.adminToken.user}@localhost";
        defaultText = literalExpression ''"''${config.services.hyperhive.ci.adminToken.user}@localhost"'';
        description = "E-mail address of that user when it is created (the forge requires one).";
      };
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      (assertion (hyperhiveForge || forge != null || cfg.forgeUrl != null) (
        if localForges == [ ] then
          "services.hyperhive.ci needs a forge: enable services.forgejo (or services.gitea) on this host, or set services.hyperhive.ci.forgeUrl to the forge the runner serves."
        else
          "services.hyperhive.ci: both services.forgejo and services.gitea are enabled on this host; set services.hyperhive.ci.forgeUrl to the one the runner serves (and services.hive-ci-prefetch.forgeUser to its user)."
      ))
      (assertion (forge == null || forgeUrl != null)
        "services.hyperhive.ci: the runner cannot reach the forge at 127.0.0.1 (services.${forge}.settings.server: PROTOCOL = \"${toString (server.PROTOCOL or "")}\", HTTP_ADDR = \"${toString (server.HTTP_ADDR or "")}\"); set services.hyperhive.ci.forgeUrl to a URL the container reaches it at${lib.optionalString (lib.hasSuffix "+unix" (server.PROTOCOL or "")) " (the runner speaks TCP only; hive-ci-prefetch may use services.hive-ci-prefetch.unixSocket)"}."
      )
      (assertion (!cfg.adminToken.enable || forge != null)
        "services.hyperhive.ci.adminToken.enable: no forge runs on this host (services.forgejo or services.gitea), so its command line cannot make the admin token; set it to false and write services.hyperhive.ci.coreTokenFile yourself (a site admin's token with the write:admin scope, root 0600)."
      )
      (assertion (cfg.labels != [ ])
        "services.hyperhive.ci.labels is empty: the runner would take no job (and the runner modules would ask for docker); the default is [ \"hive-ci:host\" ]."
      )
      (assertion (lib.all labelForm cfg.labels)
        "services.hyperhive.ci.labels: ${
          lib.concatMapStringsSep ", " (l: "\"${l}\"") (lib.filter (l: !labelForm l) cfg.labels)
        } is not of the form name:host (the job runs in the container) or name:docker://image (it runs in a container runtime); a label without one of these gets no host packages, or needs docker."
      )
      (assertion (dockerLabels == [ ] || containerCfg.config.virtualisation.docker.enable || containerCfg.config.virtualisation.podman.enable)
        "services.hyperhive.ci.labels has docker:// labels (${lib.concatStringsSep ", " dockerLabels}): enable a container runtime in the container (containers.${cfg.containerName}.config.virtualisation.podman.enable = true, or docker), or use name:host labels."
      )
      (assertion (chosen.offers.${chosen.runner})
        "services.hyperhive.ci.runner = \"${cfg.runner}\": the container's nixpkgs has no ${
          if chosen.runner == "forgejo-runner" then "services.forgejo.runner (NixOS 26.05 and later have it)" else "services.gitea-actions-runner"
        }; set services.hyperhive.ci.runner = \"auto\"."
      )
      (assertion (chosen.runner != "forgejo-runner" || forgejoNameOk)
        "services.hyperhive.ci.name = \"${cfg.name}\": under services.forgejo.runner the runner's name is also its unit, dynamic user and state directory and must match [A-Za-z0-9_]{1,16}; choose such a name, or set services.hyperhive.ci.runner = \"gitea-actions-runner\"."
      )
      # Everything below agrees unless an operator overrode one part.
      (assertion (prefetch.containerName == cfg.containerName)
        "services.hive-ci-prefetch.containerName = \"${prefetch.containerName}\" but the CI container is ${cfg.containerName}; set services.hyperhive.ci.containerName only."
      )
      (assertion (prefetch.containerName != cfg.containerName || prefetch.containerRoot == containerRoot)
        "services.hive-ci-prefetch.containerRoot = \"${prefetch.containerRoot}\" but nixos-containers keeps ${cfg.containerName}'s root in ${containerRoot}; leave containerRoot at its default."
      )
      (assertion (!containerCfg.ephemeral)
        "containers.${cfg.containerName}.ephemeral = true: the runner's .runner (its credentials) would be lost at every start; services.hyperhive.ci needs a persistent container."
      )
      (assertion (!containerCfg.privateNetwork)
        "containers.${cfg.containerName}.privateNetwork = true: the runner reaches the forge at ${url} only in the host's network namespace; services.hyperhive.ci needs privateNetwork = false."
      )
      (assertion (prefetch.runnerFile == chosen.runnerFile)
        "services.hive-ci-prefetch.runnerFile = \"${prefetch.runnerFile}\" but the container's ${chosen.runner} keeps .runner at ${chosen.runnerFile}; leave runnerFile to services.hyperhive.ci."
      )
      (assertion (prefetch.tokenFormat == chosen.tokenFormat)
        "services.hive-ci-prefetch.tokenFormat = \"${prefetch.tokenFormat}\" but the container's ${chosen.runner} (${chosen.unit}) needs \"${chosen.tokenFormat}\"; leave tokenFormat to services.hyperhive.ci."
      )
      (assertion (prefetch.registration == cfg.registration)
        "services.hive-ci-prefetch.registration = \"${prefetch.registration}\" but services.hyperhive.ci.registration = \"${cfg.registration}\"; set services.hyperhive.ci.registration only."
      )
      (assertion (chosen.instance == null || cfg.registration != "host" || (
        prefetch.labels == chosen.instance.labels && prefetch.runnerName == chosen.instance.name
      ))
        "services.hive-ci-prefetch registers the runner as \"${prefetch.runnerName}\" with labels ${builtins.toJSON prefetch.labels}, but the runner instance in the container is \"${toString (chosen.instance.name or "?")}\" with ${builtins.toJSON (chosen.instance.labels or [ ])}; set services.hyperhive.ci.name and services.hyperhive.ci.labels only."
      )
      (assertion (
        chosen.instance == null
        || lib.any (
          b: b.hostPath == prefetch.output && b.mountPoint == chosen.instance.tokenFile && b.isReadOnly
        ) (lib.attrValues containerCfg.bindMounts)
      ) "containers.${cfg.containerName}: no read-only bind mount brings the token file ${prefetch.output} (services.hive-ci-prefetch.output) to ${toString (chosen.instance.tokenFile or "?")}, where the runner's tokenFile points; leave the bind mount and tokenFile to services.hyperhive.ci.")
      (assertion (chosen.instance == null || cfg.registration != "host" || chosen.execStartPre == [ ])
        "services.hyperhive.ci.registration = \"host\" but ${chosen.unit} in the container still has an ExecStartPre (its own registration would delete the host's .runner); do not set its ExecStartPre."
      )
    ];

    services.hive-ci-prefetch = {
      enable = true;
      forgeUrl = mkDefault url;
      coreTokenFile = mkDefault cfg.coreTokenFile;
      containerName = mkDefault cfg.containerName;
      runnerFile = mkDefault chosen.runnerFile;
      tokenFormat = mkDefault chosen.tokenFormat;
      registration = mkDefault cfg.registration;
      runnerName = mkDefault cfg.name;
      labels = mkDefault cfg.labels;
      # Without a URL an assertion above says what to set; the owner check
      # of a URL that is not there would only add noise.
      forgeUser = mkIf (forgeUrl == null) (mkDefault null);
    };

    containers.${cfg.containerName} = {
      autoStart = mkDefault true;
      # The runner reaches the forge at 127.0.0.1 in the host's namespace.
      privateNetwork = mkDefault false;
      # .runner (the runner's credentials) persists in the container root.
      ephemeral = mkDefault false;
      bindMounts.${prefetch.output} = {
        hostPath = prefetch.output;
        isReadOnly = true;
      };
      config = containerModule;
    };

    systemd.services.hive-ci-admin-token = mkIf (cfg.adminToken.enable && forge != null) {
      description = "Create the forge's admin token for hive-ci-prefetch";
      documentation = [ "man:hive-ci-prefetch(8)" ];
      # The forge's unit has set up app.ini and migrated the database.
      after = [ forgeUnit ];
      requires = [ forgeUnit ];
      before = [ "hive-ci-prefetch.service" ];
      wantedBy = [ "hive-ci-prefetch.service" ];
      # Nothing to do while the file exists and is not empty (checked by
      # systemd, as root: the forge's user cannot see the file).
      unitConfig.ConditionFileNotEmpty = "!${cfg.coreTokenFile}";
      environment = forgeEnv;
      serviceConfig = {
        Type = "oneshot";
        # The forge's command line runs as the forge, with its database.
        User = forgeCfg.user;
        Group = forgeCfg.group;
        WorkingDirectory = forgeCfg.stateDir;
        # Where the unprivileged step leaves the token for the privileged
        # one; systemd removes it when the unit stops.
        RuntimeDirectory = "hive-ci-admin-token";
        RuntimeDirectoryMode = "0700";
        UMask = "0077";
        ExecStart = utils.escapeSystemdExecArgs [
          (lib.getExe adminTokenScript)
          "mint"
          (lib.getExe forgeCfg.package)
          cfg.adminToken.user
          cfg.adminToken.email
          stage
        ];
        # "+": as root, outside the sandbox, to install the file root 0600.
        ExecStartPost =
          "+"
          + utils.escapeSystemdExecArgs [
            (lib.getExe adminTokenScript)
            "install"
            stage
            cfg.coreTokenFile
            forgeCfg.user
          ];
        NoNewPrivileges = true;
        PrivateTmp = true;
        ProtectHome = true;
        ProtectSystem = "full";
      };
    };
  };
}
