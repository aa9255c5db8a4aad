# Fails when a README example drifted from the file that is built and run:
# the README must contain the body of each example file (from its first
# #include on) verbatim.
file(READ "${SOURCE_DIR}/README.md" readme)
foreach(example tools/tour_example.cpp tools/net_example.cpp tools/protocol_example.cpp)
  file(READ "${SOURCE_DIR}/${example}" text)
  string(FIND "${text}" "#include" start)
  string(SUBSTRING "${text}" ${start} -1 body)
  string(FIND "${readme}" "${body}" found)
  if(found EQUAL -1)
    message(FATAL_ERROR "README.md does not contain ${example} verbatim (from its first #include)")
  endif()
endforeach()
message(STATUS "README examples match their sources")
