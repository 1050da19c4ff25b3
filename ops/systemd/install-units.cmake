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
foreach(_unit orderlog@.service orderlog-migrate.service)
  message(STATUS "Installing: ${_dir}/${_unit}")
  configure_file("${OL_SOURCE_DIR}/ops/systemd/${_unit}.in" "${_dir}/${_unit}" @ONLY)
endforeach()
foreach(_dropin orderlog@gate.service.d orderlog@project.service.d)
  message(STATUS "Installing: ${_dir}/${_dropin}/migrate.conf")
  file(COPY "${OL_SOURCE_DIR}/ops/systemd/${_dropin}/migrate.conf" DESTINATION "${_dir}/${_dropin}")
endforeach()
