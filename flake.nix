{
  description = "Check a CI runner's forge registration and fetch its token before its nixos-container starts";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = nixpkgs.lib.genAttrs systems;
      pkgsFor = system: nixpkgs.legacyPackages.${system};
    in
    {
      packages = forAllSystems (system: {
        default = (pkgsFor system).callPackage ./nix/package.nix { };
      });

      checks = forAllSystems (system: {
        # The package runs its test suite (make check) in doCheck.
        default = self.packages.${system}.default;

        # The modules inside a real NixOS, two hosts: one that declares the
        # CI container by hand for services.hive-ci-prefetch, and one whose
        # whole configuration is the forge and services.hyperhive.ci.enable.
        # nix/check-module.nix lists what is wrong with the generated units
        # (ordering, ExecStart=, the runner reading the token file, host
        # registration); any failure or failed assertion stops the
        # evaluation of this check, so `nix flake check` (even with
        # --no-build) reports it.
        module =
          let
            inherit (nixpkgs) lib;
            output = "/run/hive-ci/runner-token";
            base = {
              nixpkgs.hostPlatform = system;
              system.stateVersion = "25.11";
              boot.loader.grub.enable = false;
              fileSystems."/".device = "none";
              services.forgejo.enable = true;
            };
            handMade = {
              services.hive-ci-prefetch.enable = true;
              containers.hive-ci = {
                autoStart = true;
                bindMounts.${output} = {
                  hostPath = output;
                  isReadOnly = true;
                };
                config = {
                  system.stateVersion = "25.11";
                  services.gitea-actions-runner.instances.hive = {
                    enable = true;
                    name = "hive";
                    url = "http://127.0.0.1:3000";
                    tokenFile = output;
                    labels = [ "native:host" ];
                  };
                };
              };
            };
            oneSwitch = {
              services.hyperhive.ci.enable = true;
            };
            failuresOf =
              name: extra:
              let
                host = lib.nixosSystem {
                  modules = [
                    self.nixosModules.default
                    base
                    extra
                  ];
                };
                inherit (host) config;
                ccfg = config.containers.hive-ci.config;
                runnerUnit =
                  if config.services.hyperhive.ci.enable then
                    ccfg.services.hyperhive.ci.container.unit
                  else
                    "gitea-runner-hive";
                failures = import ./nix/check-module.nix {
                  inherit lib config;
                  runnerUnitText = ccfg.systemd.units."${runnerUnit}.service".text;
                };
                ownAssertions = map (a: a.message) (
                  lib.filter (
                    a: !a.assertion && (lib.hasInfix "hive-ci-prefetch" a.message || lib.hasInfix "hyperhive" a.message)
                  ) config.assertions
                );
              in
              map (m: "${name}: ${m}") (failures ++ ownAssertions);
            failures = failuresOf "hand-made container" handMade ++ failuresOf "services.hyperhive.ci" oneSwitch;
          in
          assert lib.assertMsg (failures == [ ]) (
            "hive-ci-prefetch's modules in a NixOS host: " + lib.concatStringsSep "; " failures
          );
          (pkgsFor system).runCommand "hive-ci-prefetch-module-eval" { } "touch $out";
      });

      apps = forAllSystems (system: {
        default = {
          type = "app";
          program = "${self.packages.${system}.default}/bin/hive-ci-prefetch";
          meta.description = self.packages.${system}.default.meta.description;
        };
      });

      devShells = forAllSystems (
        system:
        let
          pkgs = pkgsFor system;
        in
        {
          default = pkgs.mkShell {
            # Brings pkg-config, curl, jansson and the check inputs (cmocka,
            # python3) of the package.
            inputsFrom = [ self.packages.${system}.default ];
            packages = [
              pkgs.clang-tools
              pkgs.mandoc
              pkgs.valgrind
              pkgs.strace
              pkgs.gdb
            ];
          };
        }
      );

      # nixfmt is the RFC 166 style formatter (nixfmt-rfc-style is now a
      # deprecated alias of it).
      formatter = forAllSystems (system: (pkgsFor system).nixfmt);

      # services.hive-ci-prefetch and services.hyperhive.ci (nix/hive-ci.nix,
      # imported by nix/module.nix). The module builds the package with the
      # host's nixpkgs (pkgs.callPackage ./nix/package.nix { }); set
      # services.hive-ci-prefetch.package = self.packages.<system>.default
      # to use this flake's pinned nixpkgs instead.
      # A module value, not a bare path: newer Nix wants one here, and
      # imports keeps error locations pointing into nix/module.nix.
      nixosModules.default = {
        imports = [ ./nix/module.nix ];
      };
    };
}
