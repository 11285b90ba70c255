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

      # The package runs its test suite (make check) in doCheck.
      checks = forAllSystems (system: {
        default = self.packages.${system}.default;
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

      # The module builds the package with the host's nixpkgs
      # (pkgs.callPackage ./nix/package.nix { }); set
      # services.hive-ci-prefetch.package = self.packages.<system>.default
      # to use this flake's pinned nixpkgs instead.
      nixosModules.default = ./nix/module.nix;
    };
}
