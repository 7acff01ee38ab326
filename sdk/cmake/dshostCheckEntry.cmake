# cmake -DNM=nm -DFILE=plugin.so -P dshostCheckEntry.cmake: fails unless FILE exports the
# plugin entry point dshost_plugin_v1 (DSHOST_MODEL_PLUGIN and its siblings define it).
execute_process(COMMAND ${NM} -D --defined-only ${FILE} OUTPUT_VARIABLE symbols RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR NOT symbols MATCHES "[ \t]T dshost_plugin_v1\n")
  message(FATAL_ERROR "${FILE} does not export dshost_plugin_v1: end one source file with "
                      "DSHOST_MODEL_PLUGIN, DSHOST_STRATEGY_PLUGIN or DSHOST_LAUNCHER_PLUGIN")
endif()
