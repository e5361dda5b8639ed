# The Temporal API protos, fetched at configure time from npm (pinned; never committed), with the
# one edit they need for C++, then generated with Debian's protoc and grpc_cpp_plugin into
# kodo_temporal_protos, a static library of generated code (-O1, no debug info, no sanitizers,
# outside clang-tidy's source folders).
#
# Why npm: @temporalio/core-bridge ships the raw .proto files of the Temporal API
# (@temporalio/proto ships none). Why the edit: the package temporal.api.namespace.v1 becomes the
# C++ namespace `namespace`, a keyword; it is renamed to temporal.api.namespace_.v1 in the files
# that declare and use it. The wire is unchanged: RPC paths use temporal.api.workflowservice.v1
# and no Any carries those messages. export/v1 (also a keyword) is not in the closure we compile.
find_package(Protobuf REQUIRED)
find_package(gRPC CONFIG REQUIRED)
find_program(KODO_NPM npm REQUIRED)
find_program(KODO_TAR tar REQUIRED)
find_program(KODO_GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)

set(KODO_TEMPORAL_PROTO_NPM "@temporalio/core-bridge@1.24.0")
set(upstream "package/sdk-core/crates/protos/protos/api_upstream")
set(fetch_dir ${CMAKE_CURRENT_BINARY_DIR}/proto-fetch)
set(proto_dir ${CMAKE_CURRENT_BINARY_DIR}/protos)
set(gen_dir ${CMAKE_CURRENT_BINARY_DIR}/generated)
set(stamp ${proto_dir}/.fetched-from)

set(have_protos FALSE)
if(EXISTS ${stamp})
  file(READ ${stamp} fetched_from)
  if(fetched_from STREQUAL KODO_TEMPORAL_PROTO_NPM)
    set(have_protos TRUE)
  endif()
endif()

if(NOT have_protos)
  message(STATUS "durability-temporal: fetching the Temporal API protos (npm ${KODO_TEMPORAL_PROTO_NPM})")
  file(REMOVE_RECURSE ${fetch_dir} ${proto_dir})
  file(MAKE_DIRECTORY ${fetch_dir})
  execute_process(COMMAND ${KODO_NPM} pack ${KODO_TEMPORAL_PROTO_NPM} --silent
                  WORKING_DIRECTORY ${fetch_dir} RESULT_VARIABLE rc
                  OUTPUT_VARIABLE tarball ERROR_VARIABLE npm_error OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT rc EQUAL 0 OR NOT EXISTS ${fetch_dir}/${tarball})
    message(FATAL_ERROR "durability-temporal: `npm pack ${KODO_TEMPORAL_PROTO_NPM}` failed "
                        "(${rc}): ${npm_error}")
  endif()
  execute_process(COMMAND ${KODO_TAR} -xzf ${tarball} --wildcards "${upstream}/*.proto"
                  WORKING_DIRECTORY ${fetch_dir} RESULT_VARIABLE rc ERROR_VARIABLE tar_error)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "durability-temporal: extracting the protos from ${tarball} failed: ${tar_error}")
  endif()

  # The closure of the workflow service, copied with the package rename; google/protobuf/* comes
  # from libprotobuf-dev (the tarball's copy lacks field_mask.proto).
  set(pending temporal/api/workflowservice/v1/service.proto)
  set(seen "")
  while(pending)
    list(POP_FRONT pending rel)
    if(rel IN_LIST seen OR rel MATCHES "^google/protobuf/")
      continue()
    endif()
    list(APPEND seen ${rel})
    set(source ${fetch_dir}/${upstream}/${rel})
    if(NOT EXISTS ${source})
      message(FATAL_ERROR "durability-temporal: ${rel} is imported but not in ${KODO_TEMPORAL_PROTO_NPM}")
    endif()
    file(READ ${source} text)
    string(REPLACE "temporal.api.namespace.v1" "temporal.api.namespace_.v1" text "${text}")
    file(WRITE ${proto_dir}/${rel} "${text}")
    string(REGEX MATCHALL "\nimport \"[^\"]+\"" imports "${text}")
    foreach(line IN LISTS imports)
      string(REGEX REPLACE "\nimport \"([^\"]+)\"" "\\1" imported "${line}")
      list(APPEND pending ${imported})
    endforeach()
  endwhile()
  list(SORT seen)
  file(WRITE ${proto_dir}/closure.txt "${seen}")
  file(REMOVE_RECURSE ${fetch_dir})
  file(WRITE ${stamp} "${KODO_TEMPORAL_PROTO_NPM}")
endif()

file(READ ${proto_dir}/closure.txt closure)
set(generated "")
foreach(rel IN LISTS closure)
  string(REGEX REPLACE "\\.proto$" "" stem ${rel})
  set(outputs ${gen_dir}/${stem}.pb.cc ${gen_dir}/${stem}.pb.h)
  set(grpc_args "")
  if(rel MATCHES "service\\.proto$")
    list(APPEND outputs ${gen_dir}/${stem}.grpc.pb.cc ${gen_dir}/${stem}.grpc.pb.h)
    set(grpc_args --grpc_out=${gen_dir} --plugin=protoc-gen-grpc=${KODO_GRPC_CPP_PLUGIN})
  endif()
  add_custom_command(
    OUTPUT ${outputs}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${gen_dir}
    COMMAND protobuf::protoc -I ${proto_dir} -I ${Protobuf_INCLUDE_DIRS} --cpp_out=${gen_dir}
            ${grpc_args} ${proto_dir}/${rel}
    DEPENDS ${proto_dir}/${rel} protobuf::protoc
    COMMENT "protoc ${rel}" VERBATIM)
  list(APPEND generated ${outputs})
endforeach()

# Generation alone, so clang-tidy's tree can have the headers without compiling them.
add_custom_target(kodo_temporal_proto_sources DEPENDS ${generated})
add_library(kodo_temporal_protos STATIC ${generated})
add_dependencies(kodo_temporal_protos kodo_temporal_proto_sources)
target_include_directories(kodo_temporal_protos SYSTEM PUBLIC ${gen_dir})
target_link_libraries(kodo_temporal_protos PUBLIC gRPC::grpc++ protobuf::libprotobuf)
# Replaces the directory's options (sanitizers, fuzzer coverage) rather than adding to them.
set_target_properties(kodo_temporal_protos PROPERTIES COMPILE_OPTIONS "-O1;-g0;-w")
