{
  lib,
  stdenv,
  pkg-config,
  curlMinimal,
  jansson,
  cmocka,
  python3,
}:

stdenv.mkDerivation {
  pname = "hive-ci-prefetch";
  version = lib.fileContents ../VERSION;

  # Only what the build and `make check` read, named explicitly: no build
  # product of a working tree (build/, the binary, objects, __pycache__,
  # result links, fuzzer crash files, whatever a future rule leaves behind)
  # can reach the sandbox, where its fresh mtime would make make skip the
  # real build. Files of other kinds (Nix files, docs, CI, bench) stay out
  # too, so editing them does not rebuild the program; of nix/ only the
  # admin token script is in, which tests/test_admin_token.py runs. Builds from the
  # flake and from a working tree (the module's default) get the same tree.
  src =
    let
      fs = lib.fileset;
      withExt = exts: dir: fs.fileFilter (file: lib.any file.hasExt exts) dir;
    in
    fs.toSource {
      root = ../.;
      fileset = fs.unions [
        ../Makefile
        ../VERSION
        ../LICENSE
        ../README.md # tests/test_docs.py compares it with --help
        ../man/hive-ci-prefetch.8
        (withExt [ "c" ] ../src)
        (withExt [ "h" ] ../include)
        (withExt [
          "py"
          "sh"
        ] ../tests)
        ../tests/sleep_overshoot.c # LD_PRELOAD shim built by make check
        ../nix/admin-token.sh # run by tests/test_admin_token.py
        (withExt [ "c" ] ../tests/unit)
        (withExt [ "c" ] ../tests/fuzz)
        ../tests/fuzz/corpus
        (withExt [
          "crt"
          "key"
          "sh"
        ] ../tests/tls)
      ];
    };

  strictDeps = true;

  nativeBuildInputs = [ pkg-config ];

  # curlMinimal rather than curl: fewer libraries to load in early boot; it
  # still speaks http, https (OpenSSL) and HTTP over a Unix socket.
  buildInputs = [
    curlMinimal
    jansson
  ];

  # cmocka is a library the test binaries link against, so it belongs to the
  # host platform: checkInputs (added to buildInputs only when doCheck), where
  # pkg-config and the compiler find it. nativeCheckInputs would put it on the
  # build platform, wrong when cross-compiling and hidden from pkg-config
  # under strictDeps. python3 (stdlib only) runs the stand-in forge, so it is a
  # build-platform tool: nativeCheckInputs. strace and valgrind are left out;
  # the tests that want them skip themselves.
  checkInputs = [ cmocka ];
  nativeCheckInputs = [ python3 ];

  # Test scripts may start with "#!/usr/bin/env python3", which does not
  # exist in the build sandbox.
  postPatch = ''
    patchShebangs --build .
  '';

  makeFlags = [
    "PREFIX=$(out)"
    "CC=${stdenv.cc.targetPrefix}cc"
    "PKG_CONFIG=${stdenv.cc.targetPrefix}pkg-config"
  ];

  enableParallelBuilding = true;

  doCheck = true;
  checkTarget = "check";
  # The suite starts stand-in forges on loopback; run it serially so that
  # its output reads in order and no two cases contend for ports.
  enableParallelChecking = false;

  meta = {
    description = "Check a CI runner's forge registration and fetch its token before its container starts";
    longDescription = ''
      hive-ci-prefetch runs on the host before the hive-ci nixos-container
      starts. It asks the Forgejo or Gitea forge whether the runner's
      .runner file inside the container is still registered, and deletes
      the file if not. Either it writes the forge's registration token
      (else the one remembered, else a placeholder) to the runner's token
      file, as TOKEN=<value> or the bare value, for the runner module to
      register with; or it registers the runner itself and writes .runner,
      so that no forge-wide secret enters the container.
    '';
    license = lib.licenses.mit;
    platforms = lib.platforms.linux;
    mainProgram = "hive-ci-prefetch";
  };
}
