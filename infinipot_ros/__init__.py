# Lets this source package and the installed, generated interface modules (infinipot_ros.msg,
# infinipot_ros.srv, built by CMake/rosidl) be imported as one package, whichever copy is found first.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)
