"""Offline stand-in for @rules_java: each rule forwards to the native rule of the same name."""

def java_binary(**attrs):
    """Forwards to native.java_binary."""
    native.java_binary(**attrs)  # buildifier: disable=native-java-binary

def java_import(**attrs):
    """Forwards to native.java_import."""
    native.java_import(**attrs)  # buildifier: disable=native-java-import

def java_library(**attrs):
    """Forwards to native.java_library."""
    native.java_library(**attrs)  # buildifier: disable=native-java-library

def java_lite_proto_library(**attrs):
    """Forwards to native.java_lite_proto_library."""
    native.java_lite_proto_library(**attrs)  # buildifier: disable=native-java-lite-proto

def java_package_configuration(**attrs):
    """Forwards to native.java_package_configuration."""
    native.java_package_configuration(**attrs)  # buildifier: disable=native-java-package-config

def java_plugin(**attrs):
    """Forwards to native.java_plugin."""
    native.java_plugin(**attrs)  # buildifier: disable=native-java-plugin

def java_proto_library(**attrs):
    """Forwards to native.java_proto_library."""
    native.java_proto_library(**attrs)  # buildifier: disable=native-java-proto

def java_runtime(**attrs):
    """Forwards to native.java_runtime."""
    native.java_runtime(**attrs)  # buildifier: disable=native-java-runtime

def java_test(**attrs):
    """Forwards to native.java_test."""
    native.java_test(**attrs)  # buildifier: disable=native-java-test

def java_toolchain(**attrs):
    """Forwards to native.java_toolchain."""
    native.java_toolchain(**attrs)  # buildifier: disable=native-java-toolchain
