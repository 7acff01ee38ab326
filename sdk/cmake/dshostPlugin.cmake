# dshost_add_plugin(NAME KIND <model|strategy|launcher> SOURCES ...)
# Builds a plugin shared object named dshost_<kind>_<name>.so, as the host's loader
# expects, with only the entry symbol exported. Models and strategies link LibTorch.
function(dshost_add_plugin NAME)
  cmake_parse_arguments(ARG "" "KIND" "SOURCES" ${ARGN})
  if(NOT ARG_KIND MATCHES "^(model|strategy|launcher)$")
    message(FATAL_ERROR "dshost_add_plugin(${NAME}): KIND must be model, strategy or launcher")
  endif()
  set(target dshost_${ARG_KIND}_${NAME})
  add_library(${target} MODULE ${ARG_SOURCES})
  set_target_properties(${target} PROPERTIES
    PREFIX "" OUTPUT_NAME ${target}
    CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON)
  if(DSHOST_PLUGIN_DIR)
    set_target_properties(${target} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${DSHOST_PLUGIN_DIR})
  endif()
  target_link_libraries(${target} PRIVATE dshost::sdk)
  if(NOT ARG_KIND STREQUAL "launcher")
    target_link_libraries(${target} PRIVATE ${TORCH_LIBRARIES})
  endif()
  target_link_options(${target} PRIVATE -Wl,--no-undefined)
  # Lets sqrt vectorise (the SDK's fused CPU AdamW); no plugin relies on errno from math.
  target_compile_options(${target} PRIVATE -fno-math-errno)
endfunction()
