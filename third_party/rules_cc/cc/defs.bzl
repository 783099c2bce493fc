"""Offline stand-in for @rules_cc: each rule forwards to the native rule of the same name."""

def cc_binary(**attrs):
    """Forwards to native.cc_binary."""
    native.cc_binary(**attrs)  # buildifier: disable=native-cc-binary

def cc_import(**attrs):
    """Forwards to native.cc_import."""
    native.cc_import(**attrs)  # buildifier: disable=native-cc-import

def cc_library(**attrs):
    """Forwards to native.cc_library."""
    native.cc_library(**attrs)  # buildifier: disable=native-cc-library

def cc_proto_library(**attrs):
    """Forwards to native.cc_proto_library."""
    native.cc_proto_library(**attrs)  # buildifier: disable=native-cc-proto

def cc_test(**attrs):
    """Forwards to native.cc_test."""
    native.cc_test(**attrs)  # buildifier: disable=native-cc-test

def cc_toolchain(**attrs):
    """Forwards to native.cc_toolchain."""
    native.cc_toolchain(**attrs)  # buildifier: disable=native-cc-toolchain

def cc_toolchain_suite(**attrs):
    """Forwards to native.cc_toolchain_suite."""
    native.cc_toolchain_suite(**attrs)  # buildifier: disable=native-cc-toolchain-suite

def fdo_prefetch_hints(**attrs):
    """Forwards to native.fdo_prefetch_hints."""
    native.fdo_prefetch_hints(**attrs)  # buildifier: disable=native-cc-fdo-prefetch-hints

def fdo_profile(**attrs):
    """Forwards to native.fdo_profile."""
    native.fdo_profile(**attrs)  # buildifier: disable=native-cc-fdo-profile

def objc_import(**attrs):
    """Forwards to native.objc_import."""
    native.objc_import(**attrs)  # buildifier: disable=native-cc-objc-import

def objc_library(**attrs):
    """Forwards to native.objc_library."""
    native.objc_library(**attrs)  # buildifier: disable=native-cc-objc-library
