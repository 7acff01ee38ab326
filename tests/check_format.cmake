# The format test: every C and C++ source of the tree follows .clang-format, except the
# frozen headers of released ABI minors (tests/abi/v1.N), kept as they were released.
# cmake -DCLANG_FORMAT=... -DSOURCE_DIR=... -P check_format.cmake
file(GLOB_RECURSE sources RELATIVE ${SOURCE_DIR}
  ${SOURCE_DIR}/bench/*.cc ${SOURCE_DIR}/core/*.cc ${SOURCE_DIR}/core/*.h ${SOURCE_DIR}/plugins/*.cc
  ${SOURCE_DIR}/plugins/*.h ${SOURCE_DIR}/plugins/*.hpp ${SOURCE_DIR}/plugins/*.cu ${SOURCE_DIR}/plugins/*.cuh
  ${SOURCE_DIR}/sdk/*.cc ${SOURCE_DIR}/sdk/*.h ${SOURCE_DIR}/sdk/*.hpp ${SOURCE_DIR}/tests/*.c
  ${SOURCE_DIR}/tests/*.cc ${SOURCE_DIR}/tests/*.h)
list(FILTER sources EXCLUDE REGEX "^tests/abi/v")
execute_process(COMMAND ${CLANG_FORMAT} --dry-run --Werror ${sources}
  WORKING_DIRECTORY ${SOURCE_DIR} RESULT_VARIABLE status ERROR_VARIABLE complaints)
if(NOT status EQUAL 0)
  string(REGEX MATCHALL "[^\n]+: error: code should be clang-formatted" lines "${complaints}")
  list(TRANSFORM lines REPLACE ":[0-9]+:[0-9]+: error: code should be clang-formatted" "")
  list(REMOVE_DUPLICATES lines)
  list(JOIN lines " " files)
  message(FATAL_ERROR "not formatted as .clang-format says: ${files}\n"
    "run: ${CLANG_FORMAT} -i ${files}")
endif()
list(LENGTH sources count)
message(STATUS "${count} sources follow .clang-format")
