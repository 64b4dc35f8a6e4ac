"""Build and install mmaqd.

The C++/CUDA extension (``mmaqd._ext``) follows mmcv's ``get_extensions`` pattern: a CppExtension is built
whenever ``mmaqd/ops/csrc`` holds sources, a CUDAExtension instead when torch has CUDA or ``FORCE_CUDA=1``, and
``MMAQD_WITH_OPS=0`` skips it (``import mmaqd`` works without it: every op has a PyTorch reference path).
Install with ``pip install --no-build-isolation --use-pep517 -e .`` so the extension builds against the installed
torch (tools/misc/setup_env.sh does).
"""
import glob
import os
import os.path as osp

from setuptools import find_packages, setup


def readme() -> str:
    with open('README.md', encoding='utf-8') as f:
        return f.read()


def get_version() -> str:
    scope: dict = {}
    with open(osp.join('mmaqd', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


def parse_requirements(fname: str) -> list:
    with open(fname) as f:
        return [line.split('#')[0].strip() for line in f if line.split('#')[0].strip()]


def get_extensions() -> list:
    if os.getenv('MMAQD_WITH_OPS', '1') == '0':
        return []
    csrc = osp.join('mmaqd', 'ops', 'csrc')
    sources = sorted(glob.glob(osp.join(csrc, '*.cpp')) + glob.glob(osp.join(csrc, 'cpu', '*.cpp')))
    if not sources:
        return []
    try:
        import torch
    except ImportError as e:
        raise RuntimeError('building mmaqd\'s compiled ops needs torch installed in this environment: install with '
                           '`pip install --no-build-isolation --use-pep517 -e .`, or set MMAQD_WITH_OPS=0 to '
                           'install without them') from e
    from torch.utils.cpp_extension import CppExtension, CUDAExtension
    # -fopenmp: at::parallel_for is an OpenMP pragma in ATen's headers; without it the kernels run on one thread
    define_macros, extra_compile_args = [], {'cxx': ['-O3', '-std=c++20', '-fopenmp']}
    if torch.cuda.is_available() or os.getenv('FORCE_CUDA', '0') == '1':
        define_macros.append(('MMAQD_WITH_CUDA', None))
        sources += sorted(glob.glob(osp.join(csrc, 'cuda', '*.cu')))
        # machine code for Ampere (sm_80) and Hopper (sm_90) named explicitly (torch then adds no arch flags of its
        # own), PTX of the newest for later GPUs; MMAQD_CUDA_ARCHS="80;90" overrides the list (>= 80: the kernels
        # use mma.sync m16n8k32 s8, ldmatrix and cp.async)
        archs = [a.strip() for a in os.getenv('MMAQD_CUDA_ARCHS', '80;90').split(';') if a.strip()]
        gencode = [f'-gencode=arch=compute_{a},code=sm_{a}' for a in archs]
        gencode.append(f'-gencode=arch=compute_{archs[-1]},code=compute_{archs[-1]}')
        extra_compile_args['nvcc'] = ['-O3', '-std=c++20', '--expt-relaxed-constexpr', '-lineinfo'] + gencode
        ext = CUDAExtension
    else:
        ext = CppExtension
    return [ext(name='mmaqd._ext', sources=sources, include_dirs=[osp.abspath(osp.join(csrc, 'common'))],
                define_macros=define_macros, extra_compile_args=extra_compile_args, extra_link_args=['-fopenmp'])]


def get_cmdclass() -> dict:
    if not get_extensions():
        return {}
    from torch.utils.cpp_extension import BuildExtension
    return {'build_ext': BuildExtension}


if __name__ == '__main__':
    setup(
        name='mmaqd',
        version=get_version(),
        description='Accurate quantized one-stage object detectors (AQD) for MMDetection 3.x',
        long_description=readme(),
        long_description_content_type='text/markdown',
        packages=find_packages(exclude=('configs', 'tools', 'tests')),
        include_package_data=True,
        python_requires='>=3.8',
        license='Apache License 2.0',
        install_requires=parse_requirements('requirements/runtime.txt'),
        extras_require={'tests': parse_requirements('requirements/tests.txt'),
                        'mim': parse_requirements('requirements/mminstall.txt')},
        ext_modules=get_extensions(),
        cmdclass=get_cmdclass(),
        zip_safe=False)
