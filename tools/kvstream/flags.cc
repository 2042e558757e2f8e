// Flags shared by several kvstream commands (one binary has one flag namespace).
#include <cstdint>
#include <string>

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, words, "/usr/share/dict/words",
          "Word list for generated tasks (names, values, distractors; Debian's wamerican)");
ABSL_FLAG(uint64_t, task_seed, 7, "Seed of generated evaluation tasks (training uses other seeds)");
