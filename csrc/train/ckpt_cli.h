// The conversion subcommands of `loom ckpt` (reshard, merge, export, import, diff): flag
// parsing, --help texts, progress lines and exit codes, over ckpt_convert.h / ckpt_export.h.
// tools/loom_ckpt.cc dispatches to RunCkptCommand for these subcommands.
//
//   if (IsCkptConvertCommand(argv[1])) return RunCkptCommand(argv[1], argc - 2, argv + 2);
//
// Output: results on stdout; progress lines (tables processed, bytes, bytes/s, ETA; about one
// a second and one per finished table) and errors on stderr. Exit status: 0 success, 1 failure
// (the message names the file and what is wrong), 2 bad usage; `diff`: 0 when every compared
// tensor is identical (or within --atol), 1 when some differ, 2 on error or bad usage.
#ifndef LOOM_TRAIN_CKPT_CLI_H_
#define LOOM_TRAIN_CKPT_CLI_H_

#include <string>

namespace loom::train {

// True for "reshard", "merge", "export", "import" and "diff".
bool IsCkptConvertCommand(const std::string& sub);

// Runs `loom ckpt <sub> ARGS...`; argv[0..argc) are the ARGS (the words after the
// subcommand). "--help" anywhere prints the subcommand's help and returns 0. Does not call
// InitLogging (the caller's main does).
int RunCkptCommand(const std::string& sub, int argc, char** argv);

// The usage lines of these subcommands, for the caller's top-level --help.
const char* CkptConvertUsage();

}  // namespace loom::train

#endif  // LOOM_TRAIN_CKPT_CLI_H_
