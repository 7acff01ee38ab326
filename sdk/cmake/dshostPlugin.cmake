# dshost_add_plugin(NAME KIND <model|strategy|launcher|dataset> SOURCES ...)
# Builds a plugin shared object named dshost_<kind>_<name>.so, as the host's loader
# expects, with only the entry symbol exported (checked after every link: a plugin that does
# not export dshost_plugin_v1 fails the build, not the user's run). Models and strategies
# link LibTorch with its C++ ABI flag, which must match the host's; launchers and datasets
# need no LibTorch.
set(DSHOST_CHECK_ENTRY_SCRIPT ${CMAKE_CURRENT_LIST_DIR}/dshostCheckEntry.cmake)

function(dshost_add_plugin NAME)
  cmake_parse_arguments(ARG "" "KIND" "SOURCES" ${ARGN})
  if(NOT ARG_KIND MATCHES "^(model|strategy|launcher|dataset)$")
    message(FATAL_ERROR "dshost_add_plugin(${NAME}): KIND must be model, strategy, launcher or dataset")
  endif()
  if(NOT NAME MATCHES "^[a-z][a-z0-9_-]*$")
    message(FATAL_ERROR "dshost_add_plugin(${NAME}): a name is lower case letters, digits, _ and -")
  endif()
  set(target dshost_${ARG_KIND}_${NAME})
  add_library(${target} MODULE ${ARG_SOURCES})
  set_target_properties(${target} PROPERTIES
    PREFIX "" OUTPUT_NAME ${target}
    CXX_VISIBILITY_PRESET hidden C_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON)
  if(DSHOST_PLUGIN_DIR)
    set_target_properties(${target} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${DSHOST_PLUGIN_DIR})
  endif()
  target_link_libraries(${target} PRIVATE dshost::sdk)
  separate_arguments(torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
  target_compile_options(${target} PRIVATE "$<$<COMPILE_LANGUAGE:CXX>:${torch_flags}>")
  if(ARG_KIND MATCHES "^(model|strategy)$")
    target_link_libraries(${target} PRIVATE ${TORCH_LIBRARIES})
    if(TARGET torch_cuda)  # the SDK's headers may then ask CUDA (a CUDA graph's capture)
      target_compile_definitions(${target} PRIVATE DSHOST_TORCH_CUDA=1)
    endif()
  endif()
  # With no build type, a single-config generator compiles with no -O flag at all: a plugin
  # then gets Release's flags, so a project that sets none still trains at full speed.
  if(NOT CMAKE_CONFIGURATION_TYPES AND NOT CMAKE_BUILD_TYPE)
    message(STATUS "dshost_add_plugin(${NAME}): no CMAKE_BUILD_TYPE set; building it with Release flags")
    foreach(lang CXX C)
      separate_arguments(release_flags UNIX_COMMAND "${CMAKE_${lang}_FLAGS_RELEASE}")
      target_compile_options(${target} PRIVATE "$<$<COMPILE_LANGUAGE:${lang}>:${release_flags}>")
    endforeach()
  endif()
  target_link_options(${target} PRIVATE -Wl,--no-undefined)
  # Lets sqrt vectorise (the SDK's fused CPU AdamW); no plugin relies on errno from math.
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-fno-math-errno>)
  add_custom_command(TARGET ${target} POST_BUILD
    COMMAND ${CMAKE_COMMAND} -DNM=${CMAKE_NM} -DFILE=$<TARGET_FILE:${target}>
            -P ${DSHOST_CHECK_ENTRY_SCRIPT}
    VERBATIM)
endfunction()
