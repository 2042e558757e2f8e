# Helpers that give every project target the same warnings and include root.

# kvstream_setup(<target>): -Wall -Wextra (as errors for project code), repo root on the
# include path so headers are included as "common/codec/codec.h".
function(kvstream_setup target)
  target_compile_options(${target} PRIVATE -Wall -Wextra)
  if(KVSTREAM_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
  target_include_directories(${target} PUBLIC ${PROJECT_SOURCE_DIR})
endfunction()

# kvstream_library(<name> SOURCES ... DEPS ... [PRIVATE_DEPS ...]): DEPS reach every
# target that links the library (their headers are in its headers); PRIVATE_DEPS only
# its own sources (libtorch behind model.h, so its 1 GB of headers stays out of users).
function(kvstream_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  kvstream_setup(${name})
  set_target_properties(${name} PROPERTIES UNITY_BUILD ${KVSTREAM_UNITY_BUILD})
  if(KVSTREAM_UNITY_BUILD AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    # In a unity file GCC takes each source for a header, and warns about a class holding a
    # type from that source's anonymous namespace, which is fine in a .cc.
    target_compile_options(${name} PRIVATE -Wno-subobject-linkage)
  endif()
  target_link_libraries(${name} PUBLIC ${ARG_DEPS})
  if(ARG_PRIVATE_DEPS)
    target_link_libraries(${name} PRIVATE ${ARG_PRIVATE_DEPS})
  endif()
endfunction()

# kvstream_test(<name> SOURCES ... DEPS ... LABELS ...): one gtest binary, one ctest entry.
function(kvstream_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;DEPS;LABELS;ARGS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  kvstream_setup(${name})
  # Test code itself needs little optimization (the code under test is in the libraries):
  # -O1 compiles gtest-heavy files in about two thirds of -O3's time.
  if(CMAKE_BUILD_TYPE STREQUAL "Release")
    target_compile_options(${name} PRIVATE -O1)
  endif()
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  add_test(NAME ${name} COMMAND ${name} ${ARG_ARGS} WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  if(NOT ARG_LABELS)
    set(ARG_LABELS unit)
  endif()
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT})
endfunction()

# kvstream_fuzzer(<name> SOURCES ... DEPS ...): one libFuzzer target (-DKVSTREAM_FUZZ=ON,
# clang). Its committed corpus runs as a unit test in every build (tests/, beside the
# target's own tests), so define the target only here and the test there.
function(kvstream_fuzzer name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  kvstream_setup(${name})
  target_compile_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(${name} PRIVATE ${ARG_DEPS})
endfunction()
