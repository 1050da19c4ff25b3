# Run by `cmake --install` (CMakeLists.txt): writes the systemd units of
# ops/systemd with the paths of the prefix installed to (CMAKE_INSTALL_PREFIX
# at install time, --prefix included), under $DESTDIR when set. The
# configuration goes in <sysconfdir>/orderlog: /etc/orderlog for the
# prefixes / and /usr, <prefix>/etc/orderlog otherwise (GNUInstallDirs).
set(_prefix "${CMAKE_INSTALL_PREFIX}")
if(_prefix STREQUAL "/" OR _prefix STREQUAL "/usr")
  set(_etc "/etc")
else()
  set(_etc "${_prefix}/etc")
endif()
string(REGEX REPLACE "^//" "/" OL_BIN "${_prefix}/${OL_BINDIR}/orderlog")
set(OL_CONFIG_FILE "${_etc}/orderlog/orderlog.conf")
set(OL_ENV_FILE "${_etc}/orderlog/orderlog.env")
string(REGEX REPLACE "^//" "/" OL_DOC_DIR "${_prefix}/${OL_DOCDIR}")
set(_dir "$ENV{DESTDIR}${_prefix}/${OL_SYSTEMD_UNIT_DIR}")
# every <unit>.in of ops/systemd, and every drop-in <unit>.d/*.conf
file(GLOB _units RELATIVE "${OL_SOURCE_DIR}/ops/systemd" "${OL_SOURCE_DIR}/ops/systemd/*.in")
foreach(_in ${_units})
  string(REGEX REPLACE "\\.in$" "" _unit "${_in}")
  message(STATUS "Installing: ${_dir}/${_unit}")
  configure_file("${OL_SOURCE_DIR}/ops/systemd/${_in}" "${_dir}/${_unit}" @ONLY)
endforeach()
file(GLOB _dropins RELATIVE "${OL_SOURCE_DIR}/ops/systemd" "${OL_SOURCE_DIR}/ops/systemd/*.d/*.conf")
foreach(_conf ${_dropins})
  get_filename_component(_sub "${_conf}" DIRECTORY)
  message(STATUS "Installing: ${_dir}/${_conf}")
  file(COPY "${OL_SOURCE_DIR}/ops/systemd/${_conf}" DESTINATION "${_dir}/${_sub}")
endforeach()
