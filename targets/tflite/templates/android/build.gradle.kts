// Android library module: @@MODEL_FILE@@ with LiteRT. Include it from your app's
// settings.gradle.kts (include(":@@MODULE@@")) and depend on it (implementation(project(":@@MODULE@@"))).
// Plugin versions come from your project's root build (Android Gradle Plugin 8+, Kotlin).
plugins {
    id("com.android.library")
    id("org.jetbrains.kotlin.android")
}

android {
    namespace = "@@PACKAGE@@"
    compileSdk = 35

    defaultConfig {
        minSdk = 24
        testInstrumentationRunner = "androidx.test.runner.AndroidJUnitRunner"
    }

    // Memory-map the model straight from the APK.
    androidResources {
        noCompress += "tflite"
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    implementation("com.google.ai.edge.litert:litert:@@LITERT_VERSION@@")
    androidTestImplementation("androidx.test.ext:junit:1.2.1")
    androidTestImplementation("androidx.test:runner:1.6.2")
}
