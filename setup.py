from setuptools import find_packages, setup


def readme():
    with open('README.md', encoding='utf-8') as f:
        return f.read()


def get_version():
    scope = {}
    with open('davpt_seg/version.py', encoding='utf-8') as f:
        exec(f.read(), scope)
    return scope['__version__']


def parse_requirements(path):
    with open(path, encoding='utf-8') as f:
        lines = (line.split('#', 1)[0].strip() for line in f)
        return [line for line in lines if line]


setup(
    name='davpt_seg',
    version=get_version(),
    description='DA-VPT (Distribution-Aware Visual Prompt Tuning) for '
    'MMSegmentation 1.x',
    long_description=readme(),
    long_description_content_type='text/markdown',
    packages=find_packages(exclude=('configs', 'tools', 'tests')),
    python_requires='>=3.10',
    install_requires=parse_requirements('requirements.txt'),
    extras_require=dict(
        tests=parse_requirements('requirements-test.txt'),
        # plots of training logs with mmseg's
        # tools/analysis_tools/analyze_logs.py (seaborn needs pandas)
        vis=['seaborn', 'pandas']),
    license='Apache License 2.0',
    zip_safe=False,
)
