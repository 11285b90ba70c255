/* The program's name and version, for messages, --version and the forge. */
#pragma once

#define PROGRAM_NAME "hive-ci-prefetch"

#ifndef VERSION
#define VERSION "unknown"
#endif
