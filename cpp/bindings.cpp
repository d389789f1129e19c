// minicpmv_edge._core: thin pybind11 bindings; all logic lives in the other files of cpp/.
// std::invalid_argument becomes ValueError and std::runtime_error RuntimeError (pybind11's standard mapping).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "backends.h"
#include "ggml.h"
#include "gguf_info.h"

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
    m.doc() = "minicpmv-edge native core, built on llama-cpp-python's ggml";

    py::class_<mcv::DeviceInfo>(m, "DeviceInfo")
        .def_readonly("name", &mcv::DeviceInfo::name)
        .def_readonly("description", &mcv::DeviceInfo::description)
        .def_readonly("kind", &mcv::DeviceInfo::kind)
        .def_readonly("memory_free", &mcv::DeviceInfo::memory_free)
        .def_readonly("memory_total", &mcv::DeviceInfo::memory_total)
        .def("__repr__", [](const mcv::DeviceInfo & d) {
            return "DeviceInfo(name='" + d.name + "', kind='" + d.kind + "', description='" + d.description + "')";
        });

    py::class_<mcv::GgufTensorInfo>(m, "GgufTensorInfo")
        .def_readonly("name", &mcv::GgufTensorInfo::name)
        .def_readonly("type", &mcv::GgufTensorInfo::type)
        .def_readonly("ne", &mcv::GgufTensorInfo::ne)
        .def_readonly("offset", &mcv::GgufTensorInfo::offset)
        .def_readonly("nbytes", &mcv::GgufTensorInfo::nbytes);

    py::class_<mcv::GgufInfo>(m, "GgufInfo")
        .def_readonly("version", &mcv::GgufInfo::version)
        .def_readonly("data_offset", &mcv::GgufInfo::data_offset)
        .def_readonly("file_size", &mcv::GgufInfo::file_size)
        .def_readonly("kv", &mcv::GgufInfo::kv)
        .def_readonly("tensors", &mcv::GgufInfo::tensors);

    m.def("list_devices", &mcv::list_devices, "ggml backend devices in this process");
    m.def("read_gguf_info", &mcv::read_gguf_info, py::arg("path"), py::call_guard<py::gil_scoped_release>(),
          "header, key/values and tensor infos of a GGUF file (ValueError if it is not valid)");
    m.def("ggml_commit", []() { return std::string(ggml_commit()); }, "the ggml build this module runs on");
}
