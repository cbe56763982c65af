"""How torch names Python types and dtypes in its error messages, for the checks that
raise the same messages before any work is done."""
import torch

_HEAP_TYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class made by a class statement, not a C type

# The C++ names that ATen's mm prints for mismatched operand dtypes ("double != float"); the
# other dtypes print as c10::<ATen's name> ("c10::Half", "c10::Float8_e4m3fn").
_CPP_TYPE_NAMES = {
    torch.float32: "float", torch.float64: "double", torch.bool: "bool", torch.int8: "signed char",
    torch.int16: "short int", torch.int32: "int", torch.int64: "long int", torch.uint8: "unsigned char",
    torch.uint16: "short unsigned int", torch.uint32: "unsigned int", torch.uint64: "long unsigned int",
    torch.complex32: "c10::complex<c10::Half>", torch.complex64: "c10::complex<float>",
    torch.complex128: "c10::complex<double>",
}


def python_type_name(value) -> str:
    """The type's name as torch's argument parser prints it (CPython's tp_name): a C type
    outside builtins carries its module ("numpy.float64"), a Python class does not."""
    kind = type(value)
    if kind.__flags__ & _HEAP_TYPE or kind.__module__ == "builtins":
        return kind.__name__
    return f"{kind.__module__}.{kind.__name__}"


def scalar_type_name(dtype: torch.dtype) -> str:
    """ATen's name for a dtype ("Float", "Long", "ComplexFloat"), as its kernels print it."""
    return torch.empty((), dtype=dtype).type().removeprefix("torch.").removesuffix("Tensor")


def cpp_type_name(dtype: torch.dtype) -> str:
    return _CPP_TYPE_NAMES.get(dtype) or "c10::" + scalar_type_name(dtype)
