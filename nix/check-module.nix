# What an evaluated host with services.hive-ci-prefetch enabled must show.
# Returns the failures, a list of strings (empty when all hold). Used by the
# flake's checks.<system>.module (a real nixosSystem) and by tests/test_nix.py
# (the offline evaluation kit, which also makes it fail on purpose).
{
  lib,
  # The host's evaluated config.
  config,
  # Text of the container's runner unit that reads the token file
  # (gitea-runner-<instance>.service, or the forgejo-runner@<name>.service
  # drop-in), or null.
  runnerUnitText ? null,
}:
let
  cfg = config.services.hive-ci-prefetch;
  svc = config.systemd.services.hive-ci-prefetch;
  unit = config.systemd.units."hive-ci-prefetch.service";
  lines = lib.splitString "\n" unit.text;
  values = key: map (lib.removePrefix "${key}=") (lib.filter (lib.hasPrefix "${key}=") lines);
  words = key: lib.concatMap (lib.splitString " ") (values key);
  containerUnit = "container@${cfg.containerName}.service";

  # One argument as escapeSystemdExecArgs writes it.
  arg = s: lib.replaceStrings [ "%" "$" ] [ "%%" "$$" ] (builtins.toJSON s);
  execStart = lib.concatStringsSep "\n" (values "ExecStart");
  stateArg = if cfg.stateFile == null then "" else cfg.stateFile;
  wantedArgs = [
    "--forge-url=${cfg.forgeUrl}"
    "--core-token-file=${cfg.coreTokenFile}"
    "--container-root=${cfg.containerRoot}"
    "--runner-file=${cfg.runnerFile}"
    "--output=${cfg.output}"
    "--retry-timeout=${toString cfg.retryTimeout}"
    "--state-file=${stateArg}"
    "--token-format=${cfg.tokenFormat}"
    "--registration=${cfg.registration}"
  ]
  ++ lib.optional (cfg.forgeUser != null) "--forge-user=${toString cfg.forgeUser}"
  ++ lib.optionals hostMode [
    "--runner-name=${cfg.runnerName}"
    "--labels=${lib.concatStringsSep "," cfg.labels}"
  ];
  hostMode = cfg.registration == "host";

  forges =
    lib.optional (config.services.forgejo.enable or false) "forgejo.service"
    ++ lib.optional (config.services.gitea.enable or false) "gitea.service";
  strong = svc.requires ++ svc.wants ++ svc.bindsTo ++ svc.requisite;

  runnerLines = if runnerUnitText == null then [ ] else lib.splitString "\n" runnerUnitText;
  readsOutput =
    prefix: lib.any (l: lib.hasPrefix prefix l && lib.hasSuffix cfg.output l) runnerLines;
  viaEnvironmentFile = readsOutput "EnvironmentFile=";
  viaCredential = readsOutput "LoadCredential=";

  check = ok: msg: lib.optional (!ok) msg;

  # services.hyperhive.ci: the admin token's oneshot comes first.
  ci = config.services.hyperhive.ci or { enable = false; };
  admin = config.systemd.services.hive-ci-admin-token or null;
in
check (lib.elem containerUnit (words "Before")) "Before= does not name ${containerUnit}"
++ check (lib.elem containerUnit (words "PartOf")) "PartOf= does not name ${containerUnit}"
++ check (lib.elem containerUnit unit.wantedBy) "${containerUnit} does not want the unit"
++ check (lib.all (f: lib.elem f (words "After")) forges) "After= lacks the forge's unit (${toString forges})"
++ check (lib.all (f: !lib.elem f strong) forges) "the unit requires or wants the forge's unit; After= only"
++ check (lib.length (values "ExecStart") == 1) "not exactly one ExecStart="
++ check (lib.hasPrefix "${arg (lib.getExe cfg.package)} " execStart) "ExecStart= does not start with the package's binary"
++ lib.concatMap (a: check (lib.hasInfix " ${arg a}" execStart) "ExecStart= lacks ${a}") wantedArgs
++ lib.optionals (runnerUnitText != null) (
  check (viaEnvironmentFile || viaCredential) "the runner unit does not read ${cfg.output}"
  ++ check (
    viaCredential || cfg.tokenFormat == "env"
  ) "the runner reads ${cfg.output} as an EnvironmentFile, but tokenFormat is not \"env\""
  # services.forgejo.runner's credential: the whole file is the token
  ++ check (
    !readsOutput "LoadCredential=TOKEN:" || cfg.tokenFormat == "raw"
  ) "the runner reads ${cfg.output} as the bare token (LoadCredential=TOKEN:), but tokenFormat is not \"raw\""
  ++ check (
    !hostMode || !lib.any (lib.hasPrefix "ExecStartPre=") runnerLines
  ) "registration is \"host\" but the runner unit still registers itself (ExecStartPre=)"
)
++ check (!hostMode || lib.elem "CAP_CHOWN" (words "CapabilityBoundingSet")) "registration is \"host\" but CapabilityBoundingSet= lacks CAP_CHOWN"
++ check (
  cfg.forgeUser == null || lib.elem "AF_NETLINK" (words "RestrictAddressFamilies")
) "--forge-user is given but RestrictAddressFamilies= lacks AF_NETLINK"
++ lib.optionals (ci.enable && ci.adminToken.enable) (
  check (admin != null && lib.elem "hive-ci-prefetch.service" admin.before) "hive-ci-admin-token.service does not run before the unit"
  ++ check (admin != null && lib.all (f: lib.elem f admin.after) forges) "hive-ci-admin-token.service does not run after the forge's unit"
)
