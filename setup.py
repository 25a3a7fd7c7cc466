"""skd_basicsr: Soft Knowledge Distillation (Zhang & Yan, ICASSP 2025) as a BasicSR plugin."""
from setuptools import find_packages, setup

setup(
    name='skd_basicsr',
    version='0.1.0',
    description='Soft Knowledge Distillation with multi-dimensional cross-net attention, as a BasicSR plugin',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['skd_basicsr', 'skd_basicsr.*']),
    package_data={'skd_basicsr.tools': ['demo_teacher.pth']},  # the demo's trained teacher (docs/demo/teacher)
    python_requires='>=3.9',
    # basicsr 1.4.2 is a source package whose build imports torch: install torch first and basicsr with
    # --no-build-isolation (scripts/install.sh does), or pip downloads a second torch just to build it.
    # torch 2.5: torch.serialization.safe_globals (the context manager checkpoint.py reads training states under)
    # appeared in 2.5, after add_safe_globals in 2.4; torch.nn.attention.sdpa_kernel with a list of backends (the
    # SDPA backend choice of distill/attention.py) is older, 2.3. So 2.5 is the first release that has both.
    install_requires=['torch>=2.5', 'torchvision', 'basicsr==1.4.2', 'opencv-python', 'lmdb', 'pyyaml', 'thop'],
    extras_require={'test': ['pytest'], 'deploy': ['onnx', 'onnxruntime']},
    entry_points={'console_scripts': ['basicsr=skd_basicsr.cli:main']},
    license='Apache-2.0',
)
